"""What a run prints: one line per stage (model resolved, model loaded, data built, trainer
ready) and the trainer's progress bar.

Everything else the libraries print while loading is filtered unless verbose (``tifa-lite
--verbose``, ``TIFA_LITE_VERBOSE=1`` or :func:`set_verbose`): the GGUF converter's and the
weight loader's progress bars, ``datasets``' bar per tokenising pass, bitsandbytes' notice
that its optional ``kernels`` package is missing, DeepSpeed's accelerator notice, and
deprecation warnings about arguments the user never wrote. Errors still show; model
downloads keep their progress bars.
"""

from __future__ import annotations

import logging
import os
import warnings

STAGE_LOGGER = "tifa_lite.stage"

_state = {"verbose": os.environ.get("TIFA_LITE_VERBOSE", "") not in ("", "0"), "quiet": False}


def set_verbose(verbose: bool) -> None:
    _state["verbose"] = bool(verbose)


def is_verbose() -> bool:
    return _state["verbose"]


def stage(message: str, *args) -> None:
    logging.getLogger(STAGE_LOGGER).info(message, *args)


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def quiet_libraries() -> None:
    """Install the filters (once per process; nothing when verbose). Called where models
    are loaded, before the libraries that print are imported or used."""
    if _state["verbose"] or _state["quiet"]:
        return
    _state["quiet"] = True
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true but no accelerator", category=UserWarning)
    # bitsandbytes logs from child loggers that inherit this level. DeepSpeed sets its own
    # logger's level when imported, so a filter (which survives that) is used there.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("DeepSpeed").addFilter(_ErrorsOnly())
    _hide_transformers_bars()
    import datasets

    # TRL tokenises preference data with Dataset.map: a bar per pass, four for a DPO run.
    datasets.disable_progress_bars()


def _hide_transformers_bars() -> None:
    from transformers.utils import logging as hf_logging

    if hasattr(hf_logging, "set_tqdm_hook"):
        # Only transformers' own bars (weights, shards); hub downloads use their own tqdm.
        hf_logging.set_tqdm_hook(lambda factory, args, kwargs: factory(*args, **{**kwargs, "disable": True}))
    else:
        hf_logging.disable_progress_bar()
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # no gguf package: nothing converts GGUF files here
        return
    # The GGUF converter calls tqdm directly; routed through transformers' tqdm, it obeys the hook.
    gguf_utils.tqdm = hf_logging.tqdm


def describe_model(config, precision: str, backend: str) -> str:
    q, lo = config.quant, config.lora
    if q.bits == 4:
        base = f"4-bit {q.quant_type.upper()}{' (double quant)' if q.double_quant else ''}"
    else:
        base = "8-bit" if q.bits == 8 else f"{precision}"
    adapter = f"{'DoRA' if lo.use_dora else 'LoRA'} r={lo.r}" if lo.enabled else "full fine-tuning"
    return f"{base} base, {adapter}, computing in {precision}, backend {backend}"


def describe_data(report: dict) -> str:
    counts = ", ".join(f"{k}={v}" for k, v in report.items() if not isinstance(v, (dict, list)))
    skipped = sum((report.get("skipped") or {}).values())
    return counts + (f", skipped={skipped} (see data_report.json)" if skipped else "")


def describe_trainer(trainer, config) -> str:
    args, t = trainer.args, config.train
    length = f"max_steps={args.max_steps}" if args.max_steps > 0 else f"num_epochs={args.num_train_epochs:g}"
    world = config.distributed.world_size
    batch = (f"batch {t.per_device_batch_size} × {t.gradient_accumulation_steps} accumulation × {world} process(es) "
             f"= {t.per_device_batch_size * t.gradient_accumulation_steps * world}")
    if trainer.eval_dataset is None:
        evaluation = "no held-out data"
    else:
        evaluation = f"eval every {t.eval_steps} steps" if t.eval_steps else "eval at the end"
    return f"{type(trainer).__name__}, {length}, {batch}, {evaluation}"


class CliFormatter(logging.Formatter):
    """Stage and info lines as plain sentences; warnings and errors say what they are."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def configure_cli_logging(verbose: bool) -> None:
    set_verbose(verbose)
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
        return
    handler = logging.StreamHandler()
    handler.setFormatter(CliFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])

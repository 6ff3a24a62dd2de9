"""``train(recipe, **overrides)``: the single path the CLI, the Python API and the
notebooks share.

Output folder discipline: a run works in ``<output_dir>.partial`` and is renamed to
``output_dir`` only when it has finished and every artifact is written, so a failed
run never leaves a half-written output folder. Checkpoints live in the ``.partial``
folder, so a killed run is resumed by running the same command again
(``train.resume: auto``). A failure before the first checkpoint removes the
``.partial`` folder entirely.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from tifa_lite.config import dump_config, load_recipe
from tifa_lite.config.schema import RecipeConfig
from tifa_lite.errors import ConfigError

@dataclass
class TrainResult:
    output_dir: Path
    config: RecipeConfig
    global_step: int
    metrics: dict[str, Any]
    resumed_from: str | None


def partial_dir(output_dir: Path) -> Path:
    return output_dir.with_name(output_dir.name + ".partial")


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose trainer state was completely written."""
    candidates = []
    for ckpt in folder.glob("checkpoint-*"):
        step = ckpt.name.split("-")[-1]
        if step.isdigit() and (ckpt / "trainer_state.json").is_file():
            candidates.append((int(step), ckpt))
    return max(candidates)[1] if candidates else None


def train(
    recipe: str | Path | Mapping[str, Any] | RecipeConfig,
    profile: str | list[str] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    **kw_overrides: Any,
) -> TrainResult:
    """Run a recipe. Overrides are dotted keys: ``train(r, **{"train.max_steps": 2})``,
    ``train(r, train__max_steps=2)`` or ``train(r, overrides=["train.max_steps=2"])``."""
    items: dict[str, Any] = {}
    if overrides is not None:
        from tifa_lite.config.loader import override_items

        items.update(dict(override_items(overrides)))
    items.update({k.replace("__", "."): v for k, v in kw_overrides.items()})
    config = load_recipe(recipe, items, profile=profile)
    return run_config(config)


def run_config(config: RecipeConfig) -> TrainResult:
    from tifa_lite.backends import load_for_training_with_backend, preload_backend
    from tifa_lite.hardware import detect, resolve_precision

    output_dir = Path(config.train.output_dir).expanduser().resolve()
    if output_dir.exists() and any(output_dir.iterdir()) and not config.train.overwrite_output_dir:
        raise ConfigError(
            f"train.output_dir {output_dir} already holds a finished run. Choose another "
            "train.output_dir or set train.overwrite_output_dir=true."
        )
    work_dir = partial_dir(output_dir)
    resume_from = _resume_point(config, work_dir)
    created = not work_dir.exists()
    work_dir.mkdir(parents=True, exist_ok=True)

    from tifa_lite import console

    console.quiet_libraries()
    try:
        hardware = detect()
        # unsloth (when selected) must be imported before transformers to patch it.
        backend = preload_backend(config, hardware)
        from tifa_lite.distributed.runtime import prepare_distributed
        from tifa_lite.methods import get_method
        from tifa_lite.methods.common import Run
        from tifa_lite.outputs import FinalStep, MetricsRecorder, finalize_outputs, last_metrics


        config = prepare_distributed(config)
        if config.train.auto_fit:
            from tifa_lite.planner import apply_auto_fit

            config = apply_auto_fit(config, hardware)
        precision = resolve_precision(config.train.precision, hardware)
        (work_dir / "resolved_config.yaml").write_text(dump_config(config), encoding="utf-8")
        model, tokenizer, peft_config = load_for_training_with_backend(config, precision, hardware, backend=backend)
        console.stage("model loaded: %s", console.describe_model(config, precision, backend))
        recorder = MetricsRecorder(work_dir / "metrics.jsonl", append=resume_from is not None)
        run = Run(
            config=config, work_dir=work_dir, model=model, tokenizer=tokenizer,
            peft_config=peft_config, precision=precision, callbacks=[recorder],
        )
        trainer = get_method(config.train.method).build_trainer(run)
        # Held-out rows without train.eval_steps are evaluated at the end at least.
        trainer.add_callback(FinalStep(evaluate=trainer.eval_dataset is not None and trainer.args.eval_strategy == "no"))
        console.stage("data built: %s", console.describe_data(run.data_report))
        console.stage("trainer ready: %s", console.describe_trainer(trainer, config))
        if resume_from:
            console.stage("resuming from %s", resume_from)
        train_output = trainer.train(resume_from_checkpoint=resume_from)
        finalize_outputs(trainer, run)
    except BaseException:
        if created and latest_checkpoint(work_dir) is None:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise

    from tifa_lite.distributed.runtime import barrier, is_main_process

    # Under a launcher every rank gets here; only global rank 0 moves the shared folder.
    if is_main_process():
        if not config.train.keep_checkpoints:
            for checkpoint in work_dir.glob("checkpoint-*"):
                shutil.rmtree(checkpoint)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(work_dir, output_dir)
    barrier()
    return TrainResult(
        output_dir=output_dir,
        config=config,
        global_step=trainer.state.global_step,
        metrics={**last_metrics(trainer.state.log_history), **train_output.metrics},
        resumed_from=str(resume_from) if resume_from else None,
    )


def _resume_point(config: RecipeConfig, work_dir: Path) -> str | None:
    resume = config.train.resume
    if resume == "never":
        # One deleter: under a launcher every rank gets here.
        if work_dir.exists() and int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(work_dir)
        return None
    if resume == "auto":
        found = latest_checkpoint(work_dir) if work_dir.exists() else None
        return str(found) if found else None
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise ConfigError(f"train.resume={resume}: not a checkpoint folder (no trainer_state.json).")
    return str(path)

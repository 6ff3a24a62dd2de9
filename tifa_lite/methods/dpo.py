"""Preference optimisation: ``train.method`` dpo, orpo, kto or simpo, each one TRL trainer.

* dpo → ``trl.DPOTrainer``. With a LoRA/QLoRA ``peft_config`` TRL computes the reference
  log-probs with the adapter disabled, so the reference is the base already in memory
  (no second model copy); full-parameter, TRL loads a second copy from the policy's source
  (:mod:`tifa_lite.methods.reference`).
* kto → ``trl.KTOTrainer`` (paired data is unpaired by TRL: chosen = desirable).
* orpo → ``trl.experimental.orpo.ORPOTrainer`` (reference-free; ``dpo.beta`` is lambda).
* simpo → ``trl.experimental.cpo.CPOTrainer`` with ``loss_type="simpo"`` and
  ``cpo_alpha=0``: TRL's DPOTrainer has no SimPO loss, CPO is where TRL keeps it.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Any

from tifa_lite.data.preference import load_preference_splits, to_dataset
from tifa_lite.errors import ConfigError
from tifa_lite.methods.common import Run, compose_trainer, make_config
from tifa_lite.methods.precheck import built_data
from tifa_lite.methods.reference import reference_init_kwargs

log = logging.getLogger(__name__)

# method → (module, config class, trainer class); experimental ones may move between TRL releases.
TRAINERS = {
    "dpo": ("trl", "DPOConfig", "DPOTrainer"),
    "kto": ("trl", "KTOConfig", "KTOTrainer"),
    "orpo": ("trl.experimental.orpo", "ORPOConfig", "ORPOTrainer"),
    "simpo": ("trl.experimental.cpo", "CPOConfig", "CPOTrainer"),
}
KTO_LOSSES = ("kto", "apo_zero_unpaired")


def trl_classes(method: str) -> tuple[type, type]:
    if method not in TRAINERS:
        raise ConfigError(f"train.method={method} is not a preference method ({', '.join(TRAINERS)}).")
    module_name, config_name, trainer_name = TRAINERS[method]
    try:
        module = importlib.import_module(module_name)
        return getattr(module, config_name), getattr(module, trainer_name)
    except (ImportError, AttributeError) as exc:
        import trl

        raise ConfigError(
            f"train.method={method} needs {module_name}.{trainer_name}, which the installed TRL {trl.__version__} "
            f"does not have ({exc}). Use train.method=dpo, or install a TRL version that ships it."
        ) from None


def dpo_loss_types() -> set[str]:
    """The DPO losses this TRL knows, read from its own DPOConfig docs so a TRL upgrade
    that adds or removes one is followed without a table here going stale."""
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata.get("help", "")
    return set(re.findall(r"`'([a-z_]+)'`", help_text))


def _reference_source(run: Run) -> dict[str, Any] | None:
    # Precomputed reference log-probs need no reference model during training (TRL builds none).
    return None if run.config.dpo.precompute_ref_log_probs else reference_init_kwargs(run)


def method_kwargs(run: Run) -> dict[str, Any]:
    """The ``dpo:`` section → keyword arguments of the chosen TRL config class."""
    method, d, data = run.config.train.method, run.config.dpo, run.config.data
    kwargs: dict[str, Any] = dict(beta=d.beta, max_length=data.max_length)
    losses = [d.loss_type] if isinstance(d.loss_type, str) else list(d.loss_type)
    if method == "dpo":
        known = dpo_loss_types()
        unknown = [x for x in losses if x not in known]
        if known and unknown:
            raise ConfigError(
                f"dpo.loss_type={unknown} is not a DPO loss of the installed TRL. Choose from "
                f"{', '.join(sorted(known))}; for SimPO set train.method=simpo, for ORPO train.method=orpo."
            )
        kwargs.update(loss_type=losses, loss_weights=d.loss_weights,
                      precompute_ref_log_probs=d.precompute_ref_log_probs, model_init_kwargs=_reference_source(run))
    elif method == "kto":
        loss = losses[0] if losses != ["sigmoid"] else "kto"
        if len(losses) > 1 or loss not in KTO_LOSSES:
            raise ConfigError(f"dpo.loss_type={d.loss_type} with train.method=kto: choose one of {KTO_LOSSES}.")
        kwargs.update(loss_type=loss, desirable_weight=d.desirable_weight, undesirable_weight=d.undesirable_weight,
                      precompute_ref_log_probs=d.precompute_ref_log_probs, model_init_kwargs=_reference_source(run))
    elif method == "simpo":
        kwargs.update(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=d.simpo_gamma)
    if method in ("orpo", "simpo") and losses != ["sigmoid"]:
        log.warning("dpo.loss_type=%s is ignored by train.method=%s (it has one loss).", d.loss_type, method)
    if method in ("orpo", "simpo") and d.precompute_ref_log_probs:
        log.warning("dpo.precompute_ref_log_probs is ignored by train.method=%s (reference-free).", method)
    return kwargs


def build_trainer(run: Run):
    method = run.config.train.method
    config_cls, trainer_cls = trl_classes(method)
    train_rows, eval_rows, report = built_data(run.config, run.tokenizer, load_preference_splits)
    run.data_report.update(report)
    args = make_config(config_cls, run, extra=run.config.dpo.trl_args, extra_key="dpo.trl_args", **method_kwargs(run))
    return compose_trainer(trainer_cls, run, args, to_dataset(train_rows), to_dataset(eval_rows) if eval_rows else None)

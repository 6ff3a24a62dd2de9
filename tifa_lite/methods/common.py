"""What every method shares: the Run handed to ``build_trainer`` and the mapping
from our TrainConfig to the keyword arguments of TRL's ``*Config`` classes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tifa_lite.config.passthrough import coerce, dataclass_fields
from tifa_lite.config.schema import RecipeConfig
from tifa_lite.errors import ConfigError
from tifa_lite.runplan import RunPlan


@dataclass
class Run:
    config: RecipeConfig
    # Where the trainer writes checkpoints and final artifacts (the staging folder;
    # renamed to train.output_dir when the run succeeds).
    work_dir: Path
    model: Any
    tokenizer: Any
    # peft.LoraConfig for TRL to wrap the model with, or None (full fine-tuning, or
    # the model is already a PeftModel: a continued adapter or the unsloth backend).
    peft_config: Any
    # Every hardware-dependent decision of this run, made once (tifa_lite.runplan).
    plan: RunPlan
    callbacks: list = field(default_factory=list)
    # Filled by the method for the final report (e.g. {"train_rows": 96, "dropped_overlength": 2}).
    data_report: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        return self.plan.precision


def training_kwargs(run: Run) -> dict[str, Any]:
    """Keyword arguments understood by transformers.TrainingArguments (and so by
    SFTConfig, GRPOConfig, DPOConfig, RewardConfig …)."""
    t = run.config.train
    # unsloth wires its own (offloaded) checkpointing into the model it returns.
    checkpointing = t.gradient_checkpointing and getattr(run.model, "tifa_lite_backend", None) != "unsloth"
    kwargs: dict[str, Any] = dict(
        output_dir=str(run.work_dir),
        max_steps=t.max_steps,
        num_train_epochs=t.num_epochs,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        # transformers 5 folded warmup_ratio into warmup_steps: a float below 1 is a ratio.
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        seed=t.seed,
        data_seed=t.seed,
        bf16=run.plan.numerics.autocast == "bf16",
        fp16=run.plan.numerics.autocast == "fp16",
        gradient_checkpointing=checkpointing,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        report_to=available_trackers(t.report_to) or "none",
        disable_tqdm=not t.progress_bar,
        dataloader_num_workers=t.dataloader_num_workers,
        remove_unused_columns=False,
        # transformers patches the model with Liger's kernels when training starts (decided in the run plan).
        use_liger_kernel=run.plan.liger_kernel,
    )
    if run.plan.device == "cpu" and run.plan.numerics.autocast:
        # transformers refuses bf16 without a GPU unless told the run is on the CPU; the CPU
        # rehearsal of an A10 trains in bf16 autocast there.
        kwargs["use_cpu"] = True
    if run.config.lora.enabled and run.config.distributed.world_size > 1:
        # transformers sets find_unused_parameters=True for a PeftModel, which costs DDP a
        # traversal of the autograd graph every step; every LoRA weight is used in each forward.
        kwargs["ddp_find_unused_parameters"] = False
    if checkpointing:
        # Reentrant checkpointing breaks with frozen (LoRA) inputs; non-reentrant is the safe default.
        kwargs["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    from tifa_lite.distributed.runtime import training_arguments_kwargs

    kwargs.update(training_arguments_kwargs(run.config))
    if t.eval_steps:
        kwargs.update(eval_strategy="steps", eval_steps=t.eval_steps)
    return kwargs


def early_training_arguments(config: RecipeConfig, work_dir: Path, plan: RunPlan):
    """For a DeepSpeed run: ``TrainingArguments`` with the keys the trainer will get, created
    before the model is loaded so that ZeRO-3 partitions parameters as they load (see
    :mod:`tifa_lite.distributed.runtime`). Returns None otherwise. transformers keeps only a weak reference to
    the DeepSpeed config: hold the returned object until the trainer exists."""
    if not config.distributed.deepspeed:
        return None
    from transformers import TrainingArguments

    run = Run(config=config, work_dir=work_dir, model=None, tokenizer=None, peft_config=None, plan=plan)
    return TrainingArguments(**training_kwargs(run))


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "swanlab": "swanlab", "mlflow": "mlflow"}


def available_trackers(requested: list[str]) -> list[str]:
    """Pass trackers through to transformers when their package is installed; a missing
    one is a warning, not a crash an hour into a free-GPU session."""
    import importlib.util
    import logging

    kept = []
    for name in requested:
        package = TRACKER_PACKAGES.get(name, name)
        if importlib.util.find_spec(package) is None:
            logging.getLogger(__name__).warning("train.report_to: %s is not installed (pip install %s); not reporting to it.", name, package)
        else:
            kept.append(name)
    return kept


def make_config(config_cls: type, run: Run, extra: dict[str, Any] | None = None, extra_key: str | None = None,
                **method_kwargs: Any):
    """Instantiate a TRL config class. Method-specific keys must exist in this TRL
    version (a silent drop would train with a different setting than the recipe says).
    ``extra`` is the recipe's escape hatch named ``extra_key`` (``grpo.trl_args``): typed by
    the class's fields; a field the recipe's own keys already set is set there, not twice."""
    fields = dataclass_fields(config_cls)
    kwargs = {**training_kwargs(run), **method_kwargs}
    # Nothing is dropped silently: a setting this transformers/TRL version lacks is an error.
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise TypeError(f"{config_cls.__name__} in this TRL version has no {unknown}")
    target = f"trl.{config_cls.__name__}"
    section = (extra_key or "train").split(".")[0]
    for name, value in coerce(extra or {}, fields, extra_key or "", target).items():
        if name in kwargs and isinstance(kwargs[name], dict) and isinstance(value, dict):
            value = {**kwargs[name], **value}  # e.g. generation_kwargs: the recipe's keys added to ours
        elif name in kwargs:
            where = _recipe_key(name, section) or "its typed keys (see `tifa-lite config RECIPE`)"
            raise ConfigError(f"{extra_key}.{name}: the recipe already sets {target}.{name} through {where}; set it there.")
        kwargs[name] = value
    try:
        return config_cls(**kwargs)
    except ValueError as exc:
        # TRL's own checks in __post_init__: say which recipe keys the message is about.
        named = [n for n in fields if re.search(rf"\b{n}\b", str(exc))]
        # The escape hatch's own names first: the typed keys were valid on their own.
        keys = [f"{extra_key}.{n}" for n in named if n in (extra or {})]
        keys += [_recipe_key(n, section) for n in named if n not in (extra or {})]
        sections = " and ".join(f"{s}.*" for s in dict.fromkeys(("train", section)))
        where = ", ".join(dict.fromkeys(k for k in keys if k)) or f"the recipe's {sections} keys"
        raise ConfigError(f"{where}: {target} refused these settings: {exc}") from None


def _recipe_key(trl_name: str, section: str) -> str | None:
    """The recipe key that sets a TRL field of the same name, if there is one."""
    for name in dict.fromkeys((section, "train", "data")):
        model = RecipeConfig.model_fields.get(name)
        if model is not None and trl_name in model.annotation.model_fields:
            return f"{name}.{trl_name}"
    return None


def compose_trainer(trainer_cls: type, run: Run, args: Any, train_dataset: Any, eval_dataset: Any = None, **extra: Any):
    """A TRL trainer with what every method hands it the same way: the loaded model, the
    tokenizer as processing class, the LoRA config for TRL to wrap with, our callbacks; then
    the plan's dtypes (:mod:`tifa_lite.modeling.dtypes`), not the ones TRL or PEFT set, and on
    the CPU the loss scaler accelerate gives an fp16 run on CUDA."""
    from tifa_lite.hardware import torch_dtype
    from tifa_lite.modeling.dtypes import restore_frozen_dtypes, settle_adapter_dtype

    trainer = trainer_cls(
        model=run.model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=run.tokenizer,
        peft_config=run.peft_config,
        callbacks=run.callbacks,
        **extra,
    )
    n = run.plan.numerics
    settle_adapter_dtype(trainer.model, n.adapter_dtype)
    if run.config.quant.bits is not None:
        restore_frozen_dtypes(trainer.model, torch_dtype(n.weight_dtype), n.norm_dtype and torch_dtype(n.norm_dtype))
    if n.grad_scaler and run.plan.device == "cpu":
        supply_cpu_loss_scaler(trainer.accelerator)
    return trainer


def supply_cpu_loss_scaler(accelerator) -> None:
    """What accelerate's ``Accelerator.__init__`` does for fp16 on CUDA, done for the CPU, where
    it skips both (``device.type != "cpu"``): autocast around the prepared model's forward
    (``native_amp``) and a dynamic loss scaler for backward, unscale-before-clip and step. The
    optimizer is wrapped with the scaler in ``prepare``, inside ``train()``, after this."""
    import torch

    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu")

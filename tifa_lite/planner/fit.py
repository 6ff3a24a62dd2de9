"""Recipe → plan, and the auto-fit that edits a recipe until its plan fits the card.

The order of the auto-fit moves is cheapest-first for the result: settings that keep
the optimisation identical (precision the card supports; for GRPO, no dense copy of a
4-bit base while generating and, where the rollout is the peak, fewer micro-batches per
generate call; gradient checkpointing; smaller micro-batch with more accumulation so the
global batch is unchanged; an 8-bit optimizer) come before the one that changes what is
trained on (a shorter maximum length). Switching LoRA to QLoRA changes the model, so it is only suggested.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.errors import ConfigError
from tifa_lite.hardware import Hardware, resolve_precision
from tifa_lite.runplan.numerics import Numerics, resolve_numerics
from tifa_lite.planner.hardware_catalog import GPU, gpu_by_name, gpu_from_detected
from tifa_lite.planner.layer_loop import extra_layers
from tifa_lite.planner.memory import Plan, PlanInput, estimate
from tifa_lite.planner.shapes import ModelShape, read_model_shape

log = logging.getLogger(__name__)

# Plans are estimates and the allocator fragments: leave this share of the card free.
SAFETY_MARGIN = 0.08
MIN_MAX_LENGTH = 256


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    why: str
    applied: bool = True  # False: advice only, auto_fit does not make it

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r} ({self.why})"


def planned_numerics(config: RecipeConfig, gpu: GPU | None) -> Numerics:
    """The run plan's own precision and dtype rules (:func:`tifa_lite.hardware.resolve_precision`,
    :func:`tifa_lite.runplan.numerics.resolve_numerics`), applied to a catalogue card."""
    if gpu is None:
        hardware = Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)
    else:
        hardware = Hardware(device="cuda", gpu_name=gpu.label, bf16=gpu.bf16, gpu_count=1, total_memory_gib=gpu.memory_gib)
    precision = resolve_precision(config.train.precision, hardware, quiet=True)
    return resolve_numerics(
        precision, quant_bits=config.quant.bits, quant_compute=config.quant.compute_dtype,
        lora=config.lora.enabled, deepspeed=bool(config.distributed.deepspeed),
    )


def planned_precision(config: RecipeConfig, gpu: GPU | None) -> str:
    return planned_numerics(config, gpu).precision


def _lora_targets(target: str | list[str], shape: ModelShape) -> tuple[str, ...]:
    linear = tuple(shape.linear_shapes())  # the family's own module names (fused ones included)
    if target == "all-linear":
        return linear
    names = [target] if isinstance(target, str) else list(target)
    return tuple(t for t in linear if any(t == n or t.endswith(n) or n.endswith(t) for n in names))


def _optimizer(optim: str) -> str:
    optim = optim.lower()
    if "8bit" in optim:
        return "paged_adamw_8bit" if "paged" in optim else "adamw_8bit"
    return "sgd" if optim.startswith("sgd") else "adamw"


def _use_vllm(config: RecipeConfig, gpu: GPU | None) -> bool:
    if gpu is None:
        return False
    from tifa_lite.runplan.generation import select_vllm, vllm_importable

    # Planning for a card elsewhere: "on" means vLLM will be there; "auto" follows this machine's install.
    choice = config.grpo.use_vllm
    available = choice == "on" or vllm_importable()
    return select_vllm(choice, vllm_available=available, cuda_available=True, quant_bits=config.quant.bits)


def generation_rows(config: RecipeConfig) -> int:
    """Rows one TRL generate call samples on one device: the micro-batch times the micro-batches
    generated together (grpo.steps_per_generation; TRL's default, the gradient accumulation)."""
    t, g = config.train, config.grpo
    explicit = g.trl_args.get("generation_batch_size")  # TRL's other spelling: the batch over every rank
    if explicit:
        return max(1, int(explicit) // config.distributed.world_size)
    return t.per_device_batch_size * (g.steps_per_generation or t.gradient_accumulation_steps)


def smaller_generation_steps(config: RecipeConfig) -> int | None:
    """The next smaller grpo.steps_per_generation that still generates whole groups, or None."""
    t, g = config.train, config.grpo
    current = g.steps_per_generation or t.gradient_accumulation_steps
    rows = t.per_device_batch_size * config.distributed.world_size
    for steps in range(current - 1, 0, -1):
        if current % steps == 0 and (rows * steps) % g.num_generations == 0:
            return steps
    return None


def _dequantized_generation(config: RecipeConfig, gpu: GPU | None) -> bool:
    from tifa_lite.runplan.generation import select_dequantized_generation

    return select_dequantized_generation(
        config.grpo.dequantize_for_generation, quant_bits=config.quant.bits, device="cuda" if gpu else "cpu",
        vllm=_use_vllm(config, gpu))


def plan_input(config: RecipeConfig, gpu: GPU | None, shape: ModelShape | None = None) -> PlanInput:
    """``gpu=None`` plans for the CPU (peak RSS)."""
    shape = shape or read_model_shape(config.model)
    t, method = config.train, config.train.method
    grpo = method == "grpo"
    # MGRPO (grpo.passes=2) adds a revised group per prompt to each micro-batch, and its prompts carry the
    # first answer: up to twice the rows, each up to one completion longer.
    passes = config.grpo.passes if grpo else 1
    seq_len = config.grpo.max_prompt_length + passes * config.grpo.max_completion_length if grpo else config.data.max_length
    attn = config.model.attn_implementation
    numerics = planned_numerics(config, gpu)
    precision = numerics.precision
    return PlanInput(
        shape=shape,
        device="cuda" if gpu else "cpu",
        precision=precision,
        # What compose_trainer sets after TRL; under DeepSpeed TRL's choice stays (None: the planner's rule for it).
        # Full-parameter without DeepSpeed keeps fp32 master weights under 16-bit autocast.
        param_dtype=numerics.weight_dtype,
        lora_dtype=numerics.adapter_dtype,
        norm_dtype=numerics.norm_dtype,
        quant_bits=config.quant.bits,
        double_quant=config.quant.double_quant,
        lora=config.lora.enabled,
        lora_r=config.lora.r,
        lora_dropout=config.lora.dropout,
        lora_targets=_lora_targets(config.lora.target_modules, shape),
        batch=t.per_device_batch_size * passes,
        seq_len=seq_len,
        gradient_checkpointing=t.gradient_checkpointing,
        optimizer=_optimizer(t.optim),
        logits="trl_chunked",
        attn_implementation="eager" if attn == "eager" else "sdpa",
        zero_stage=config.distributed.zero_stage,
        world_size=config.distributed.world_size,
        method=method,
        num_generations=config.grpo.num_generations,
        generation_batch=generation_rows(config) if grpo else None,
        max_prompt_length=config.grpo.max_prompt_length,
        max_completion_length=config.grpo.max_completion_length,
        use_vllm=grpo and _use_vllm(config, gpu),
        vllm_gpu_memory_utilization=config.grpo.vllm_gpu_memory_utilization,
        prefill_once=grpo and config.grpo.prefill_once,
        pack_groups=grpo and config.grpo.pack_groups,
        dequantized_generation=grpo and _dequantized_generation(config, gpu),
        gpu_memory_gib=gpu.memory_gib if gpu else None,
        loop_extra_layers=extra_layers(config.model.layer_loop),
        loop_lora_per_pass=bool(config.model.layer_loop and config.model.layer_loop.lora_per_pass),
    )


def resolve_gpu(name: str, memory_gib: float | None = None) -> GPU | None:
    """A catalogue card, or None for ``cpu``. ``memory_gib`` overrides the card's memory."""
    if name.lower() == "cpu":
        return None
    gpu = gpu_by_name(name)
    if memory_gib:
        gpu = GPU(gpu.name, gpu.label, memory_gib, gpu.bf16, gpu.flash_attn2, gpu.compute_capability)
    return gpu


def capacity_gib(gpu: GPU) -> float:
    return gpu.memory_gib * (1 - SAFETY_MARGIN)


def plan_config(config: RecipeConfig, gpu: GPU | None, shape: ModelShape | None = None) -> Plan:
    return estimate(plan_input(config, gpu, shape))


def fits(plan: Plan, gpu: GPU | None) -> bool:
    return gpu is None or (plan.peak_gib <= capacity_gib(gpu) and not plan.problems)


def check_generation_reserve(config: RecipeConfig, hardware: Any) -> None:
    """Before a GRPO run with vLLM loads anything: refuse a vLLM reserve that cannot hold its weights
    plus one max-length sequence's KV cache (vLLM would stop at its start), warn when it holds fewer
    than the rows of one generate call."""
    if config.train.method != "grpo":
        return
    gpu = gpu_for_run(config, hardware)
    if gpu is None:
        return
    try:
        plan = plan_config(config, gpu)
    except ConfigError as exc:  # no readable config.json: the load reports that itself
        log.info("plan: vLLM reserve not checked (%s)", exc)
        return
    for warning in plan.warnings:
        log.warning("plan: %s", warning)
    if plan.problems:
        raise ConfigError("; ".join(plan.problems))


def _set(config: RecipeConfig, dotted: str, value: Any) -> None:
    section, key = dotted.split(".")
    setattr(getattr(config, section), key, value)


def _get(config: RecipeConfig, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


def suggest(config: RecipeConfig, gpu: GPU | None, shape: ModelShape | None = None) -> tuple[RecipeConfig, list[Change], Plan]:
    """Returns (fitted copy of the config, the changes, the plan of the fitted copy)."""
    shape = shape or read_model_shape(config.model)
    fitted = config.model_copy(deep=True)
    changes: list[Change] = []

    def change(key: str, new: Any, why: str) -> None:
        changes.append(Change(key, _get(fitted, key), new, why))
        _set(fitted, key, new)

    if gpu is not None:
        if not gpu.bf16 and config.train.precision == "bf16":
            change("train.precision", "fp16", f"{gpu.name} has no bf16")
        if not gpu.bf16 and config.quant.compute_dtype == "bf16":
            change("quant.compute_dtype", "fp16", f"{gpu.name} has no bf16")
        if not gpu.flash_attn2 and config.model.attn_implementation == "flash_attention_2":
            change("model.attn_implementation", "sdpa", f"{gpu.name} cannot run FlashAttention-2")
    plan = plan_config(fitted, gpu, shape)
    if fits(plan, gpu):
        return fitted, changes, plan

    def still_too_big() -> bool:
        nonlocal plan
        plan = plan_config(fitted, gpu, shape)
        return not fits(plan, gpu)

    if fitted.train.method == "grpo" and fitted.grpo.dequantize_for_generation == "on":
        change("grpo.dequantize_for_generation", "off", "generate from the 4-bit weights: no dense copy")
        if not still_too_big():
            return fitted, changes, plan
    while (fitted.train.method == "grpo" and plan.phase == "generation" and "generation_batch_size" not in
           fitted.grpo.trl_args and (steps := smaller_generation_steps(fitted)) is not None):
        change("grpo.steps_per_generation", steps,
               f"generate {steps} micro-batch(es) per call: a smaller KV cache, the same on-policy samples")
        if not still_too_big():
            return fitted, changes, plan
    if not fitted.train.gradient_checkpointing:
        change("train.gradient_checkpointing", True, "recompute activations in backward instead of storing them")
        if not still_too_big():
            return fitted, changes, plan
    t = fitted.train
    while t.per_device_batch_size > 1:
        batch, accum = t.per_device_batch_size, t.gradient_accumulation_steps
        new_batch = batch // 2
        new_accum = accum * batch // new_batch if (accum * batch) % new_batch == 0 else accum * 2
        change("train.per_device_batch_size", new_batch, "smaller micro-batch")
        change("train.gradient_accumulation_steps", new_accum, f"keeps {batch * accum} rows per optimizer step")
        if not still_too_big():
            return fitted, changes, plan
    if not fitted.lora.enabled and _optimizer(t.optim) == "adamw":
        change("train.optim", "paged_adamw_8bit", "8-bit paged optimizer states (bitsandbytes)")
        if not still_too_big():
            return fitted, changes, plan
    if fitted.train.method == "grpo":
        g = fitted.grpo
        while g.max_completion_length > 64:
            change("grpo.max_completion_length", max(64, g.max_completion_length // 2), "shorter rollouts")
            if not still_too_big():
                return fitted, changes, plan
    else:
        while fitted.data.max_length > MIN_MAX_LENGTH:
            change("data.max_length", max(MIN_MAX_LENGTH, fitted.data.max_length // 2),
                   "shorter rows (longer ones are truncated or dropped per data.overlength)")
            if not still_too_big():
                return fitted, changes, plan
    if fitted.quant.bits is None and fitted.lora.enabled:
        changes.append(Change("quant.bits", None, 4, "QLoRA: a 4-bit base (not applied automatically)", applied=False))
    elif fitted.quant.bits is None:
        changes.append(Change("lora.enabled", False, True, "train a LoRA adapter instead (not applied automatically)",
                              applied=False))
    return fitted, changes, plan


def gpu_for_run(config: RecipeConfig, hardware: Any) -> GPU | None:
    """The card to fit to: ``hardware.gpu`` when named, else the detected CUDA device; None on the CPU."""
    hw = config.hardware
    if hw.gpu != "auto":
        return resolve_gpu(hw.gpu, getattr(hw, "memory_gib", None))
    if getattr(hardware, "device", "cpu") != "cuda":
        return None
    gpu = gpu_from_detected(hardware.gpu_name, hardware.total_memory_gib, hardware.bf16)
    if gpu is None:
        raise ConfigError("train.auto_fit: could not read the GPU's memory; set hardware.gpu (e.g. t4, a10).")
    return gpu


def apply_auto_fit(config: RecipeConfig, hardware: Any) -> RecipeConfig:
    """``train.auto_fit: true``: returns a copy of ``config`` edited to fit the card, printing each change."""
    gpu = gpu_for_run(config, hardware)
    try:
        read_model_shape(config.model)
    except ConfigError as exc:  # a family the planner refuses (MoE, MLA, linear attention): train as written
        msg = f"auto_fit: {exc} Config unchanged."
        print(msg)
        log.warning(msg)
        return config
    if gpu is None:
        plan = plan_config(config, None)
        print(f"auto_fit: no GPU; nothing to fit (planned peak RAM {plan.peak_gib:.1f} GiB). Config unchanged.")
        return config
    fitted, changes, plan = suggest(config, gpu)
    applied = [c for c in changes if c.applied]
    where = f"{gpu.label} ({gpu.memory_gib:.1f} GiB)"
    if not applied:
        print(f"auto_fit: fits {where} as is: planned peak {plan.peak_gib:.1f} GiB. Config unchanged.")
    for c in applied:
        print(f"auto_fit: {c}")
    for c in changes:
        if not c.applied:
            print(f"auto_fit: suggestion: {c}")
    if fits(plan, gpu):
        if applied:
            print(f"auto_fit: planned peak {plan.peak_gib:.1f} GiB on {where}.")
    else:
        msg = (f"auto_fit: still does not fit {where} after these changes: planned peak {plan.peak_gib:.1f} GiB "
               f"> {capacity_gib(gpu):.1f} GiB usable. Training anyway; expect out-of-memory.")
        print(msg)
        log.warning(msg)
    return RecipeConfig.model_validate(fitted.model_dump())

"""Which dtype each part of a model is in, and what runs around it, for one precision.

One pure function of the recipe's keys and the resolved precision, read by the run plan
(training and inference loads) and by the memory planner, so the two never disagree.

The rules, and why:
- LoRA/QLoRA: the frozen base loads in the compute precision (or NF4 with that compute
  dtype); trainable weights are fp32 (:func:`tifa_lite.hardware.adapter_dtype_name`); under
  fp16 the norms are fp32 (the QLoRA recipe: the residual stream then runs in fp32 where
  fp16 would overflow). Code that runs outside autocast (TRL's generation, inference) meets
  an fp32 hidden state at a 16-bit head: the load casts the head's input
  (:func:`tifa_lite.modeling.dtypes.cast_head_inputs`).
- Full-parameter in 16-bit without DeepSpeed: fp32 master weights under 16-bit autocast,
  as mixed precision is meant. fp16 weights cannot be trained with fp16's GradScaler
  ("Attempting to unscale FP16 gradients"); pure bf16 weights lose every Adam update
  below ~2**-9 of the weight — measured in benchmarks/results/precision.md. DeepSpeed keeps
  its own fp32 master copy of 16-bit weights, so there the weights stay 16-bit.
- fp16 compute trains with a loss scaler (accelerate makes one on CUDA; the CPU rehearsal
  supplies the same ``torch.amp.GradScaler``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tifa_lite.hardware import adapter_dtype_name


@dataclass(frozen=True)
class Numerics:
    precision: str  # the compute precision: bf16 | fp16 | fp32
    autocast: str | None  # the dtype autocast runs in during training, None without autocast
    grad_scaler: bool  # fp16's dynamic loss scaler
    weight_dtype: str  # the unquantised weights as loaded
    quant_compute_dtype: str | None  # bitsandbytes 4-bit compute (and storage) dtype
    adapter_dtype: str | None  # LoRA weights / a reward model's score head, set after TRL builds its trainer
    norm_dtype: str | None  # normalisation weights when they differ from weight_dtype


def resolve_numerics(
    precision: str, *, quant_bits: int | None, quant_compute: str = "auto", lora: bool,
    deepspeed: bool = False, training: bool = True,
) -> Numerics:
    sixteen = precision in ("bf16", "fp16")
    weight = precision
    if training and sixteen and not lora and not deepspeed:
        weight = "fp32"  # master weights; autocast computes in 16-bit
    compute = None
    if quant_bits == 4:
        compute = precision if quant_compute == "auto" else quant_compute
        if compute == "bf16" and precision == "fp16":
            compute = "fp16"  # precision was downgraded because the card has no bf16 (T4): follow it
    return Numerics(
        precision=precision,
        autocast=precision if training and sixteen else None,
        grad_scaler=training and precision == "fp16" and not deepspeed,
        weight_dtype=weight,
        quant_compute_dtype=compute,
        adapter_dtype=adapter_dtype_name(precision) if training and lora and not deepspeed else None,
        # ZeRO-3 gathers parameters into buffers of one dtype: mixed dtypes break it.
        norm_dtype="fp32" if precision == "fp16" and lora and not deepspeed else None,
    )

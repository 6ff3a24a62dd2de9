"""What dtype each part of a model trains in, beyond the one it was loaded in.

The decision (:func:`tifa_lite.hardware.adapter_dtype`) lives with the hardware; this
module applies it: normalisation weights at load time under fp16 compute, and the
trainable weights after TRL built its trainer (TRL 1.16 casts every trainable
parameter of a quantised model to bf16 in each trainer's ``__init__``; the optimizer
is only built in ``train()``, so a cast here is what it optimises).
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

log = logging.getLogger(__name__)


def keep_norms_fp32(model) -> int:
    """Under fp16 compute, normalisation weights go to fp32 (the QLoRA paper's recipe): the
    residual stream then runs in fp32 between layers, where fp16 overflows on large
    activations; they are a few thousand values per layer. Embeddings and the LM head stay
    fp16: autocast runs the LM head's matmul in fp16 whatever it is stored in, and an fp32
    copy of both would cost 2 bytes per parameter more (2.2 GB on Qwen2.5-7B, of a T4's 15).
    Returns how many modules were cast."""
    cast = 0
    for module in model.modules():
        if type(module).__name__.endswith("Norm"):  # LayerNorm, LlamaRMSNorm, Qwen2RMSNorm, …
            for param in module.parameters(recurse=False):
                if param.is_floating_point() and param.dtype != torch.float32:
                    param.data = param.data.float()
            cast += 1
    return cast


def cast_trainable(model, dtype: torch.dtype) -> dict[str, int]:
    """Every trainable floating-point parameter to ``dtype`` (LoRA A/B, DoRA magnitudes,
    a reward model's score head, modules_to_save copies). Returns :func:`trainable_dtypes`."""
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    return trainable_dtypes(model)


def trainable_dtypes(model) -> dict[str, int]:
    """Trainable parameter counts per dtype name, e.g. ``{"float32": 1_843_200}``."""
    counts: Counter[str] = Counter()
    for param in model.parameters():
        if param.requires_grad:
            counts[str(param.dtype).replace("torch.", "")] += param.numel()
    return dict(counts)


def settle_adapter_dtype(model, precision: str, deepspeed: bool = False) -> dict[str, int] | None:
    """Put a PEFT model's trainable weights in :func:`tifa_lite.hardware.adapter_dtype`, after
    TRL's trainer ``__init__`` cast them. Left as they are (None returned): full fine-tuning
    (the trainable weights are the model), DeepSpeed (it keeps its own fp32 master copy, and
    ZeRO-3 needs one dtype across its persistent parameters), and unsloth's models (its
    kernels choose their own adapter dtypes)."""
    from tifa_lite.hardware import adapter_dtype

    if deepspeed or not hasattr(model, "peft_config") or getattr(model, "tifa_lite_backend", None) == "unsloth":
        return None
    counts = cast_trainable(model, adapter_dtype(precision))
    log.info("trainable parameters by dtype (precision %s): %s", precision, counts)
    return counts

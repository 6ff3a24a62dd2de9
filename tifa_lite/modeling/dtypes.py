"""What dtype each part of a model trains in, beyond the one it was loaded in.

The decisions live in the run plan (:mod:`tifa_lite.runplan.numerics`); this module applies
them: normalisation weights at load time under fp16 compute (with the cast at the 16-bit
head that this makes necessary outside autocast), frozen weights a trainer upcast, and the
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


def _cast_input_to_weight(module, args):
    weight = module.weight
    if args and torch.is_tensor(args[0]) and args[0].is_floating_point() and args[0].dtype != weight.dtype:
        return (args[0].to(weight.dtype), *args[1:])
    return None


def _cast_floating_inputs(dtype: torch.dtype):
    def hook(module, args):
        if any(torch.is_tensor(a) and a.is_floating_point() and a.dtype != dtype for a in args):
            return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
        return None

    return hook


def _computes_with_own_16bit_weights(module) -> torch.dtype | None:
    """The 16-bit dtype of weights a module multiplies by itself (an MoE router's gate, fused
    expert tensors, GPT-OSS's sinks), or None: norms, embeddings, bitsandbytes and LoRA layers
    (which cast their own input), containers that hold no weights of their own."""
    if type(module).__name__.endswith("Norm") or isinstance(module, torch.nn.Embedding):
        return None
    own = [p for p in module.parameters(recurse=False) if p.is_floating_point()]
    if not own or any(type(p).__name__ in ("Params4bit", "Int8Params") for p in own):
        return None
    dtypes = {p.dtype for p in own}
    if len(dtypes) == 1 and dtypes & {torch.float16, torch.bfloat16}:
        return next(iter(dtypes))
    return None


def cast_head_inputs(model) -> int:
    """With fp32 norms the hidden state leaving a norm is fp32, while the LM head (never
    quantised), a classifier's score head, an MoE router's gate and fused expert weights are
    16-bit. Inside autocast that meets no problem; TRL's GRPO generation, ``PeftModel.generate``
    and every inference load run outside autocast, where ``F.linear``/``matmul`` refuse fp32
    input with fp16 weights ("expected m1 and m2 to have the same dtype"; Qwen3-MoE's router
    on a T4 at the first rollout). So those modules cast their floating inputs to their own
    weights' dtype. bitsandbytes' and LoRA's layers cast their input themselves. Returns how
    many modules got the cast."""
    heads = [model.get_output_embeddings()] if hasattr(model, "get_output_embeddings") else []
    heads.append(getattr(model, "score", None))
    hooked = 0
    seen = set()
    for head in {id(h): h for h in heads if h is not None}.values():
        if type(head) is torch.nn.Linear and head.weight.dtype in (torch.float16, torch.bfloat16):
            head.register_forward_pre_hook(_cast_input_to_weight)
            seen.add(id(head))
            hooked += 1
    for module in model.modules():
        dtype = None if id(module) in seen else _computes_with_own_16bit_weights(module)
        if dtype is not None and type(module) is not torch.nn.Linear:  # plain Linears: only the heads
            module.register_forward_pre_hook(_cast_floating_inputs(dtype))
            hooked += 1
    return hooked


def restore_frozen_dtypes(model, weight_dtype: torch.dtype, norm_dtype: torch.dtype | None) -> int:
    """Put frozen, unquantised weights back in the plan's dtypes after a trainer upcast them.
    TRL's CPO/ORPO trainers call PEFT's ``prepare_model_for_kbit_training``, which turns every
    16-bit weight of a quantised model fp32: on a 7B the embeddings and LM head alone grow by
    2.2 GB, which neither a T4 has nor the planner counts. Returns how many tensors were cast."""
    cast = 0
    for module in model.modules():
        is_norm = type(module).__name__.endswith("Norm")
        target = norm_dtype if (is_norm and norm_dtype is not None) else weight_dtype
        for param in module.parameters(recurse=False):
            if (param.requires_grad or not param.is_floating_point() or param.dtype == target
                    or type(param).__name__ in ("Params4bit", "Int8Params")):
                continue
            param.data = param.data.to(target)
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


def settle_adapter_dtype(model, adapter_dtype: str | None) -> dict[str, int] | None:
    """Put a PEFT model's trainable weights in the plan's adapter dtype, after TRL's trainer
    ``__init__`` cast them. Left as they are (None returned): no adapter dtype in the plan
    (full fine-tuning: the trainable weights are the model; DeepSpeed: it keeps its own fp32
    master copy, and ZeRO-3 needs one dtype across its persistent parameters), and unsloth's
    models (its kernels choose their own adapter dtypes)."""
    from tifa_lite.hardware import torch_dtype

    if adapter_dtype is None or not hasattr(model, "peft_config") or getattr(model, "tifa_lite_backend", None) == "unsloth":
        return None
    counts = cast_trainable(model, torch_dtype(adapter_dtype))
    log.info("trainable parameters by dtype: %s", counts)
    return counts

"""``model.attn_implementation: auto`` → the attention kernel this run gets.

FlashAttention-2 only where it runs: a 16-bit precision (its kernels take fp16/bf16 only),
an Ampere-or-newer GPU not treated as a T4 (the same test as bf16,
:func:`tifa_lite.hardware.supports_bf16`), transformers' own availability check, and a
``flash_attn`` that imports (a wheel built for another torch/CUDA passes the metadata check
and fails at the first forward). Else sdpa. A model class with neither kernel (GPT-OSS's
attention sinks have no sdpa path in transformers) gets eager, said in the plan's
substitutes. Decided once, in the run plan.
"""

from __future__ import annotations

import logging

from tifa_lite.hardware import Hardware, supports_bf16

log = logging.getLogger(__name__)


def choose_attention(config, hardware: Hardware, precision: str, architecture: str | None = None
                     ) -> tuple[str, str | None]:
    """``(implementation, substitute note or None)``; ``architecture``: the model class named in
    the checkpoint's config.json, where it is known before loading."""
    choice = config.model.attn_implementation
    if choice != "auto":
        return choice, None
    implementation, note = _preferred_attention(hardware, precision)
    supported = _class_supports(architecture)
    if supported is not None and implementation not in supported:
        fallback = "sdpa" if "sdpa" in supported else "eager"
        return fallback, f"{implementation} → {fallback} ({architecture} has no {implementation} kernel in transformers)"
    return implementation, note


def _class_supports(architecture: str | None) -> set[str] | None:
    """The attention kernels transformers implements for ``architecture`` (None: unknown)."""
    import transformers

    model_class = getattr(transformers, architecture, None) if architecture else None
    if model_class is None:
        return None
    supported = {"eager"}
    if getattr(model_class, "_supports_sdpa", False):
        supported.add("sdpa")
    if getattr(model_class, "_supports_flash_attn", False) or getattr(model_class, "_supports_flash_attn_2", False):
        supported.add("flash_attention_2")
    return supported


def _preferred_attention(hardware: Hardware, precision: str) -> tuple[str, str | None]:
    if hardware.rehearsal:
        if hardware.bf16:  # the rehearsed card would run FlashAttention-2 where flash_attn is installed
            return "sdpa", "FlashAttention-2 → sdpa (a CUDA kernel; the card runs it when flash_attn is installed)"
        return "sdpa", None
    if hardware.device == "cuda" and precision in ("bf16", "fp16") and supports_bf16() and flash_attention_2_usable():
        return "flash_attention_2", None
    return "sdpa", None


def flash_attention_2_usable() -> bool:
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return False
    try:
        import flash_attn  # noqa: F401  (its CUDA extension loads here)
    except Exception as exc:  # an ABI mismatch raises ImportError or OSError
        log.warning("flash_attn is installed but does not import (%s): using sdpa attention.", exc)
        return False
    return True

"""A lever that replaces library computation checks itself: on its first use in a run it
computes both paths once on the same inputs and compares them within the dtype's rounding;
a difference (or an error) switches it off for the run with one line that names the model
family and the difference. Used by GRPO's packed groups and shared prefill
(:mod:`tifa_lite.methods.grpo_groups`) and the dequantised generation copy
(:mod:`tifa_lite.modeling.dequantized`)."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# How far a lever may differ from the library's path: the dtype's rounding when the same sums
# are taken in another order (the packed and padded forwards' measured spread, tests/methods).
ROUNDING = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}
# Layer kinds whose mixing of positions is attention alone (a window is a band in the mask).
MASKED_LAYER_KINDS = ("full_attention", "sliding_attention")


def unwrapped(model):
    """The model under a DDP wrapper; PEFT forwards ``.config`` to the transformers model."""
    return getattr(model, "module", model)


def text_config(model):
    """The language model's config (a multimodal config's text part); None without a config."""
    config = getattr(unwrapped(model), "config", None)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def family(model) -> str:
    text = text_config(model)
    return str(getattr(text, "model_type", None) or type(unwrapped(model)).__name__)


def sequence_mixers_outside_attention(model) -> str | None:
    """What, besides attention, mixes positions in this model: layer kinds other than
    attention (``layer_types``), or convolutions over the sequence. None: attention only."""
    text = text_config(model)
    others = sorted(set(getattr(text, "layer_types", None) or []) - set(MASKED_LAYER_KINDS))
    if others:
        return f"{'/'.join(others)} layers"
    modules = model.modules() if hasattr(model, "modules") else []
    if any(isinstance(m, torch.nn.Conv1d) for m in modules):
        return "convolution layers over the sequence"
    return None


def compute_dtype(model, args=None) -> torch.dtype:
    """The dtype the lever's arithmetic runs in: the trainer's autocast, else the weights'."""
    if args is not None and getattr(args, "fp16", False):
        return torch.float16
    if args is not None and getattr(args, "bf16", False):
        return torch.bfloat16
    for layer in unwrapped(model).modules():
        if getattr(layer, "compute_dtype", None) is not None:  # a bitsandbytes 4-bit layer
            return layer.compute_dtype
    return unwrapped(model).get_input_embeddings().weight.dtype


def difference(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> str | None:
    """None when ``got`` equals ``expected`` within the dtype's rounding, else the worst gap."""
    tolerance = ROUNDING.get(dtype, ROUNDING[torch.float16])
    got, expected = got.detach().float(), expected.detach().float()
    gap = (got - expected).abs()
    if bool((gap <= tolerance + tolerance * expected.abs()).all()):
        return None
    return f"max |Δ| {gap.max().item():.3g} (tolerance {tolerance:g} in {str(dtype).replace('torch.', '')})"


class LeverProbe:
    """One lever's state for a run: on until a structural refusal or its first-use comparison
    says otherwise; the line that says so is printed once."""

    def __init__(self, name: str):
        self.name = name
        self.checked = False
        self.off_reason: str | None = None

    def switch_off(self, model, reason: str) -> None:
        self.checked, self.off_reason = True, reason
        log.warning("%s off for %s: %s; the library's own path runs instead", self.name, family(model), reason)

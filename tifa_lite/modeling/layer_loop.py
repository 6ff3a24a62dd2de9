"""Tifa's looped layers (``model.layer_loop``): layers ``start..end-1`` run ``repeats`` times.

The decoder's ``ModuleList`` is rebuilt in execution order, so a 30-layer model with
``{start: 10, end: 20, repeats: 2}`` becomes 40 slots: 0..19, 10..19 again, 20..29. The
base weights of a repeated layer are the same tensors (no extra memory for a 4-bit base).

- ``lora_per_pass: true``: each repeat is a clone sharing the base parameters (PEFT's own
  ``clone_module``, the one its ``layer_replication`` uses), so PEFT sees distinct module
  names per slot and attaches a LoRA to each (Relaxed Recursive Transformers).
- ``lora_per_pass: false``: each repeat is a :class:`SharedPass` that calls the very same
  layer; it registers no children, so PEFT wraps the layer once and every pass uses that LoRA.

Every slot has its own KV-cache index: a clone gets its slot as ``layer_idx``; a shared
pass hands the layer a cache view that files its keys/values under the pass's slot (the
layer's own ``layer_idx`` belongs to its first pass). ``num_hidden_layers`` and the
per-layer lists of the config (``layer_types``, …) are extended the same way, so the
decoder loop, the masks and ``DynamicCache(config=...)`` all see the deeper model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tifa_lite.errors import ConfigError
from tifa_lite.modeling.lever_check import family, sequence_mixers_outside_attention

def source_layers(num_layers: int, start: int, end: int, repeats: int) -> list[int]:
    """Original layer index of every slot of the looped stack, in execution order."""
    return list(range(end)) + list(range(start, end)) * (repeats - 1) + list(range(end, num_layers))


def check_span(loop, num_layers: int, where: str = "model.layer_loop") -> None:
    if loop.end > num_layers:
        raise ConfigError(
            f"{where}: end={loop.end} but the model has {num_layers} layers (0..{num_layers - 1}); "
            f"end is exclusive, so it can be at most {num_layers}. Choose start < end <= {num_layers}."
        )


def check_trainable(config) -> None:
    """A looped full fine-tune would train one tensor for several slots, then export it as copies."""
    if config.model.layer_loop is not None and not config.lora.enabled:
        raise ConfigError(
            "model.layer_loop with lora.enabled=false: looped passes share their base weights, which must stay "
            "frozen (LoRA or QLoRA) for the run to export as an ordinary deeper model. Set lora.enabled=true."
        )


def decoder_layers(model) -> tuple[Any, nn.ModuleList]:
    """(the module holding ``layers``, the list): ``model.model.layers`` for Llama/Qwen2/Mistral/…"""
    inner = model
    while hasattr(inner, "model") and not isinstance(getattr(inner, "layers", None), nn.ModuleList):
        inner = inner.model
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"model.layer_loop: {type(model).__name__} has no decoder ``layers`` list to loop "
            "(supported: Llama-style models such as Llama, Qwen2, Mistral, SmolLM)."
        )
    return inner, layers


def apply_layer_loop(model, loop) -> list[int] | None:
    """Rebuild the decoder stack of a loaded model in looped execution order; returns the
    slot → original layer map (None when ``loop`` is None). Call before PEFT attaches."""
    if loop is None:
        return None
    holder, layers = decoder_layers(model)
    config = model.config
    num_layers = len(layers)
    if getattr(config, "tifa_lite_layer_loop", None):
        raise ConfigError("model.layer_loop: this model is already looped (or is a merged looped model); loop it once.")
    check_span(loop, num_layers)
    mixers = None if loop.lora_per_pass else sequence_mixers_outside_attention(model)
    if mixers:
        # SlotCache re-files a shared pass's keys/values; linear-attention and conv states are
        # read and written by layer index elsewhere, so a shared pass would reuse the first's
        raise ConfigError(
            f"model.layer_loop with lora_per_pass=false on {family(model)}: its {mixers} keep a recurrent cache "
            "that a shared pass cannot have a slot of its own in, so cached generation would differ from the model. "
            "Set model.layer_loop.lora_per_pass=true (each pass a clone with its own cache slot).")
    sources = source_layers(num_layers, loop.start, loop.end, loop.repeats)
    first_slot: dict[int, int] = {}
    slots: list[nn.Module] = []
    for slot, src in enumerate(sources):
        layer = layers[src]
        if src not in first_slot:
            first_slot[src] = slot
            _set_layer_idx(layer, slot)
        elif loop.lora_per_pass:
            from peft.tuners.tuners_utils import clone_module

            layer = clone_module(layer, share_weights=True)
            _set_layer_idx(layer, slot)
        else:
            layer = SharedPass(layer, slot)
        slots.append(layer)
    holder.layers = nn.ModuleList(slots)
    extend_config(config, sources)
    config.tifa_lite_layer_loop = {
        "start": loop.start, "end": loop.end, "repeats": loop.repeats,
        "lora_per_pass": loop.lora_per_pass, "base_layers": num_layers,
    }
    return sources


def extend_config(config, sources: list[int]) -> None:
    """num_hidden_layers and every per-layer list follow the slot → source map."""
    before = config.to_dict()
    for key, value in extend_config_dict(before, sources).items():
        if value is not before.get(key) and key != "num_hidden_layers":
            setattr(config, key, value)
    config.num_hidden_layers = len(sources)


def extend_config_dict(config: dict[str, Any], sources: list[int]) -> dict[str, Any]:
    """The same on a config.json dict (the merge writes an ordinary deeper model)."""
    num_layers = config["num_hidden_layers"]
    out = dict(config)
    for key, value in config.items():
        # layer_types and any other list with one entry per layer (architectures is never one)
        if isinstance(value, list) and len(value) == num_layers and key != "architectures":
            out[key] = [value[src] for src in sources]
    out["num_hidden_layers"] = len(sources)
    return out


def _set_layer_idx(layer: nn.Module, slot: int) -> None:
    for module in layer.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = slot


class SharedPass(nn.Module):
    """A later pass of a shared layer. The layer is held outside ``_modules`` on purpose:
    registered here it would be found twice by PEFT and saved twice in the state dict."""

    def __init__(self, layer: nn.Module, slot: int):
        super().__init__()
        object.__setattr__(self, "shared", layer)
        self.slot = slot

    def forward(self, hidden_states: torch.Tensor, *args, cache=None, **kwargs):
        if kwargs.get("past_key_values") is not None:  # the name before transformers 5.40
            kwargs["past_key_values"] = SlotCache(kwargs["past_key_values"], self.slot)
        return self.shared(hidden_states, *args, cache=None if cache is None else SlotCache(cache, self.slot), **kwargs)

    def extra_repr(self) -> str:
        return f"slot={self.slot}, shares={type(self.shared).__name__}(layer_idx={_layer_idx(self.shared)})"


def _layer_idx(layer: nn.Module):
    return next((m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")), None)


class SlotCache:
    """A view of a transformers ``Cache`` whose writes go to one slot, whatever ``layer_idx``
    the attention passes; everything else (lengths, masks) is the cache's own."""

    def __init__(self, cache, slot: int):
        self._cache, self._slot = cache, slot

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return self._cache.update(key_states, value_states, self._slot, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._cache, name)

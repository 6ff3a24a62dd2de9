"""Shard-by-shard merge: the base's safetensors are streamed one tensor at a time, each
LoRA target is merged by PEFT's own ``lora.Linear.merge`` on a one-layer module, and
the output is written in shards of bounded size.

Why not ``PeftModel.merge_and_unload`` on the whole model: it needs the whole base in
RAM (14 GB for a 7B in bf16, more than a free Colab's 12.7 GB once Python and the
adapter are counted). Here the extra anonymous memory is about three output shards
(the one being filled, its serialisation, the layer being merged), whatever the model
size: see benchmarks/results/merge.md. The arithmetic stays PEFT's (scaling, rsLoRA, DoRA's magnitude), done in
fp32 and rounded to the output dtype once, so a bf16 merge does not lose small deltas
to a bf16 accumulation. Features whose merge is not a per-weight operation
(modules_to_save, trainable tokens, LoRA biases, non-Linear targets) take PEFT's
full-model path instead (see :func:`needs_full_model`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from tifa_lite.merging.adapter import AdapterInfo, BaseModelRef, MergeError

log = logging.getLogger(__name__)

INDEX = "model.safetensors.index.json"


def base_shards(base_dir: Path) -> list[Path] | None:
    """The base's safetensors files in order, or None (no safetensors: .bin or GGUF); each
    one checked whole first (:mod:`tifa_lite.verify`)."""
    from tifa_lite.verify import check_weights_folder

    check_weights_folder(base_dir)
    index = base_dir / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [base_dir / name for name in dict.fromkeys(weight_map.values())]
    single = base_dir / "model.safetensors"
    return [single] if single.is_file() else None


def base_shapes(shards: list[Path]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def needs_full_model(info: AdapterInfo, base: BaseModelRef, shards: list[Path] | None) -> str | None:
    """Why this adapter cannot be merged weight by weight (None: it can)."""
    cfg = info.peft_config
    if base.gguf_file or shards is None:
        return "the base has no safetensors shards to stream"
    if info.other_keys:
        return f"the adapter holds more than LoRA matrices ({info.other_keys[0]}, …)"
    if getattr(cfg, "bias", "none") != "none" or getattr(cfg, "lora_bias", False):
        return "the adapter trains biases"
    if getattr(cfg, "fan_in_fan_out", False) or getattr(cfg, "layer_replication", None):
        return "fan_in_fan_out / layer_replication layouts"
    variants = [f.name for f in dataclasses.fields(cfg) if f.metadata.get("is_lora_variant") and getattr(cfg, f.name)]
    if set(variants) - {"use_dora"} or isinstance(cfg.init_lora_weights, str) and cfg.init_lora_weights == "mica":
        return f"LoRA variant {variants}"
    return None


def _layer_rank_alpha(cfg, module: str) -> tuple[int, float]:
    from peft.utils.other import get_pattern_key

    r_key = get_pattern_key(cfg.rank_pattern.keys(), module)
    a_key = get_pattern_key(cfg.alpha_pattern.keys(), module)
    return cfg.rank_pattern.get(r_key, cfg.r), cfg.alpha_pattern.get(a_key, cfg.lora_alpha)


def merge_weight(weight: torch.Tensor, parts: dict[str, torch.Tensor], cfg, module: str) -> torch.Tensor:
    """W + ΔW for one Linear, by PEFT's ``lora.Linear.merge(safe_merge=True)`` in fp32."""
    from peft.tuners.lora import Linear as LoraLinear

    out_f, in_f = weight.shape
    base_layer = torch.nn.Linear(in_f, out_f, bias=False, device="meta")
    # A copy even when the base is already fp32: PEFT 0.22's merge writes into the base
    # layer's tensor in place, and the caller still compares against the original.
    base_layer.weight = torch.nn.Parameter(weight.to(torch.float32, copy=True), requires_grad=False)
    r, alpha = _layer_rank_alpha(cfg, module)
    # No random init (the weights are loaded next) and no dropout; everything else is the trained config.
    layer_cfg = dataclasses.replace(cfg, init_lora_weights=False, lora_dropout=0.0, inference_mode=True)
    layer = LoraLinear(base_layer, "default", config=layer_cfg, r=r, lora_alpha=alpha)
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(parts["lora_A"].to(torch.float32))
        layer.lora_B["default"].weight.copy_(parts["lora_B"].to(torch.float32))
        if "lora_magnitude_vector" in parts:
            layer.lora_magnitude_vector["default"].weight.copy_(parts["lora_magnitude_vector"].to(torch.float32))
        try:
            layer.merge(safe_merge=True)
        except ValueError as exc:
            raise MergeError(f"{module}: {exc} (the adapter holds NaN/inf values; retrain or use another checkpoint).") from None
    return layer.get_base_layer().weight.data


class MergeStats:
    """How far the merged weights are from the base, both rounded to the output dtype,
    counted while streaming (no second read of the model)."""

    def __init__(self):
        self.changed_tensors = self.changed_elems = self.total_elems = 0
        self.max_rel = 0.0

    def add(self, base: torch.Tensor, merged: torch.Tensor, dtype: torch.dtype) -> None:
        diff = merged.float() - base.to(dtype).float()
        changed = int((diff != 0).sum())
        self.total_elems += merged.numel()
        if changed:
            self.changed_tensors += 1
            self.changed_elems += changed
            self.max_rel = max(self.max_rel, float(diff.norm() / base.float().norm().clamp_min(1e-12)))

    def report(self) -> dict[str, Any]:
        return {
            "changed_tensors": self.changed_tensors,
            "changed_fraction_of_lora_targets": self.changed_elems / self.total_elems if self.total_elems else 0.0,
            "max_relative_change": self.max_rel,
        }


# (key, tensor) → the base tensor ΔW is added to; ``merge --base-weights dequantized``
# passes dequant(NF4(W)) for the Linears the run held in 4-bit (merging/quantized_base.py).
BaseTransform = Callable[[str, torch.Tensor], torch.Tensor]


def _iter_merged(shards: list[Path], info: AdapterInfo, dtype: torch.dtype, stats: MergeStats,
                 base_transform: BaseTransform | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    targets = {f"{module}.weight": module for module in info.modules}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if base_transform is not None:
                    tensor = base_transform(key, tensor)
                module = targets.get(key)
                if module is not None:
                    merged = merge_weight(tensor, info.modules[module], info.peft_config, module).to(dtype)
                    stats.add(tensor, merged, dtype)
                    tensor = merged
                elif tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                yield key, tensor.contiguous()
                del tensor


def stream_merge(shards: list[Path], info: AdapterInfo, out_dir: Path, dtype: torch.dtype, max_shard_bytes: int,
                 base_transform: BaseTransform | None = None) -> dict[str, Any]:
    """Merge and write; returns the weight statistics (against the base ΔW was added to)."""
    stats = MergeStats()
    write_sharded(_iter_merged(shards, info, dtype, stats, base_transform), out_dir, max_shard_bytes)
    return stats.report()


def write_sharded(tensors: Iterator[tuple[str, torch.Tensor]], out_dir: Path, max_shard_bytes: int) -> list[str]:
    """Write tensors in shards of at most ``max_shard_bytes`` (one tensor larger than
    that gets a shard of its own) with the index transformers reads."""
    from safetensors.torch import save_file

    written: list[tuple[str, list[str]]] = []
    buffer: dict[str, torch.Tensor] = {}
    size = total = 0

    def flush():
        nonlocal buffer, size
        if buffer:
            name = f"shard-{len(written):05d}.tmp"
            save_file(buffer, str(out_dir / name), metadata={"format": "pt"})
            written.append((name, list(buffer)))
            buffer, size = {}, 0

    for key, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if buffer and size + nbytes > max_shard_bytes:
            flush()
        buffer[key] = tensor
        size += nbytes
        total += nbytes
    flush()
    if not written:
        raise MergeError("the base checkpoint holds no tensors")

    names = []
    weight_map = {}
    for i, (tmp_name, keys) in enumerate(written):
        name = "model.safetensors" if len(written) == 1 else f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
        (out_dir / tmp_name).rename(out_dir / name)
        names.append(name)
        weight_map.update({k: name for k in keys})
    if len(written) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
    return names

"""Merge of a looped run (``model.layer_loop``) into an ordinary deeper model.

The looped model is, weight for weight, a plain model whose stack lists the span's layers
once per pass. So the merge first writes that plain model out: an expanded base (each
slot gets a copy of its source layer's tensors; ``num_hidden_layers`` and the per-layer
config lists extended) and an expanded adapter (a shared LoRA copied to every pass; a
per-pass LoRA is already per slot). Both go to a temporary folder beside the output, and
the ordinary merge runs on them: streaming, tokenizer, generation config and the
self-check (merged vs plain base + adapter, i.e. vs the looped model) are unchanged.
The price is one extra copy of the base on disk while it runs.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tifa_lite.atomic import write_text
from tifa_lite.merging.adapter import read_adapter, resolve_base
from tifa_lite.merging.stream import base_shards
from tifa_lite.modeling.layer_loop import check_span, extend_config_dict, source_layers

_LAYER_RE = re.compile(r"^(?P<prefix>.*?\blayers\.)(?P<idx>\d+)(?P<rest>\..+)$")
RUN_FILES = ("resolved_config.yaml", "tifa_sampling.json")


def looped(adapter: str | Path):
    """The adapter's ``model.layer_loop`` (None for an ordinary run)."""
    info = read_adapter(adapter)
    return getattr(info.recipe_model, "layer_loop", None)


def merge_looped(merge, adapter: str | Path, output: str | Path, base: str | None = None, **kwargs) -> dict[str, Any]:
    """``merge`` (tifa_lite.merging.api.merge) on the expanded base and adapter."""
    info = read_adapter(adapter)
    loop = info.recipe_model.layer_loop
    base_ref = resolve_base(info, base)
    shards = base_shards(base_ref.path)
    if base_ref.gguf_file or shards is None:
        raise _error(f"the base {base_ref.path} has no safetensors shards to expand; merge a looped run into a safetensors base (--base).")
    num_layers = base_ref.config["num_hidden_layers"]
    check_span(loop, num_layers, where=f"{info.path}: model.layer_loop")
    sources = source_layers(num_layers, loop.start, loop.end, loop.repeats)
    output = Path(output).expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.looped-", dir=output.parent) as tmp:
        expanded_base = expand_base(base_ref.path, shards, base_ref.config, sources, Path(tmp) / "base")
        expanded_adapter = expand_adapter(info.path, sources, Path(tmp) / "adapter", expanded_base)
        report = merge(expanded_adapter, output, **kwargs)
    report.update(adapter=str(info.path), base=str(base_ref.path), base_origin=base_ref.origin)
    report["layer_loop"] = {
        "start": loop.start, "end": loop.end, "repeats": loop.repeats, "lora_per_pass": loop.lora_per_pass,
        "base_layers": num_layers, "merged_layers": len(sources), "slot_sources": sources,
    }
    report["notes"].append(
        f"looped layers {loop.start}..{loop.end - 1} ×{loop.repeats}: written out as an ordinary "
        f"{len(sources)}-layer model (was {num_layers}), each pass with its {'own' if loop.lora_per_pass else 'shared'} LoRA merged"
    )
    _record_origin(output, base_ref.origin)
    write_text(output / "merge_report.json", json.dumps(report, indent=2))
    return report


def expand_base(base_dir: Path, shards: list[Path], config: dict[str, Any], sources: list[int], out: Path) -> Path:
    """A copy of the base whose layer ``slot`` holds the tensors of layer ``sources[slot]``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    slots_of: dict[int, list[int]] = {}
    for slot, src in enumerate(sources):
        slots_of.setdefault(src, []).append(slot)
    weight_map: dict[str, str] = {}
    for shard in shards:
        tensors = {}
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                m = _LAYER_RE.match(key)
                if m is None:
                    tensors[key] = f.get_tensor(key)
                    continue
                tensor = f.get_tensor(key)
                for slot in slots_of[int(m.group("idx"))]:
                    # each slot its own storage: safetensors refuses tensors that share memory
                    tensors[f"{m.group('prefix')}{slot}{m.group('rest')}"] = tensor.clone()
        save_file(tensors, str(out / shard.name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard.name))
    if len(shards) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    deeper = extend_config_dict(config, sources)
    deeper.pop("tifa_lite_layer_loop", None)
    (out / "config.json").write_text(json.dumps(deeper, indent=2), encoding="utf-8")
    for extra in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt"):
        if (base_dir / extra).is_file():
            shutil.copy2(base_dir / extra, out / extra)
    return out


def expand_adapter(adapter_dir: Path, sources: list[int], out: Path, expanded_base: Path) -> Path:
    """The adapter with a LoRA for every slot; its run files name the expanded base and no loop.

    A per-pass run already saved one LoRA per slot. A shared run saved one per original layer,
    under the slot of its first pass; the later passes get copies of it."""
    import torch
    import yaml
    from safetensors.torch import save_file

    from tifa_lite.merging.adapter import _load_adapter_tensors

    out.mkdir(parents=True)
    first_slot: dict[int, int] = {}
    for slot, src in enumerate(sources):
        first_slot.setdefault(src, slot)
    tensors = _load_adapter_tensors(adapter_dir)
    expanded: dict[str, torch.Tensor] = dict(tensors)
    for key, tensor in tensors.items():
        m = _LAYER_RE.match(key)
        if m is None:
            continue
        for slot, src in enumerate(sources):
            if first_slot[src] == int(m.group("idx")) and slot != first_slot[src]:
                name = f"{m.group('prefix')}{slot}{m.group('rest')}"
                if name not in tensors:
                    expanded[name] = tensor.clone()
    save_file(expanded, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    for item in adapter_dir.iterdir():
        if item.is_file() and not item.name.startswith("adapter_model.") and item.name not in RUN_FILES:
            shutil.copy2(item, out / item.name)
    run_dir = adapter_dir
    if adapter_dir.name.startswith("checkpoint-") and not (adapter_dir / "resolved_config.yaml").is_file():
        run_dir = adapter_dir.parent
    run = yaml.safe_load((run_dir / "resolved_config.yaml").read_text(encoding="utf-8")) or {}
    run.setdefault("model", {}).update(name_or_path=str(expanded_base), source="local", gguf_file=None, layer_loop=None)
    (out / "resolved_config.yaml").write_text(yaml.safe_dump(run, sort_keys=False), encoding="utf-8")
    if (run_dir / "tifa_sampling.json").is_file():
        shutil.copy2(run_dir / "tifa_sampling.json", out / "tifa_sampling.json")
    return out


def _record_origin(output: Path, origin: str) -> None:
    """The merged config names the real base, not the temporary expanded copy."""
    config_file = output / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tifa_lite_base"] = origin
    write_text(config_file, json.dumps(config, indent=2, sort_keys=True))


def _error(message: str):
    from tifa_lite.merging.adapter import MergeError

    return MergeError(message)

"""A PEFT LoRA adapter → a GGUF LoRA file, by llama.cpp's own ``convert_lora_to_gguf.py``
(from the same pinned source release as :mod:`tifa_lite.export.llamacpp_convert`), for
``serve --engine llama.cpp --adapter NAME=PATH`` and ``export ollama --adapter``.

Why there is code here at all: llama.cpp applies one scale per tensor, ``alpha / r`` with a
single ``alpha`` for the file and ``r`` read from the tensor. PEFT's scale is that only for
plain LoRA; rsLoRA (``alpha / sqrt(r)``), ``rank_pattern`` and ``alpha_pattern`` give other
scales, which the converter silently ignores. Such an adapter is rewritten first into a
staging folder with each ``lora_B`` multiplied by ``peft_scale · r / alpha``, so llama.cpp's
arithmetic gives PEFT's product exactly. DoRA has no llama.cpp form (its magnitude vector
rescales whole columns after the sum) and is refused by name, as are adapters that are not
LoRA matrices alone; the converter's own refusals (embeddings in the adapter, an unknown
architecture) come back as its last error line.

Conversions are cached by the adapter's content (``~/.cache/tifa_lite/lora-gguf``), so a
server restart does not convert again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from tifa_lite.errors import ConfigError
from tifa_lite.export.llamacpp_convert import cache_root, run_script

CONVERTER = "convert_lora_to_gguf.py"
OUTTYPES = ("f16", "bf16", "f32", "q8_0")


def base_folder(adapter_dir: Path, base: str | None = None) -> Path:
    """The Hugging Face folder (config and tokenizer) of the adapter's base, as ``merge`` resolves it."""
    from tifa_lite.merging.adapter import read_adapter, resolve_base

    return resolve_base(read_adapter(adapter_dir), base).path


def llama_cpp_scales(adapter_dir: Path) -> tuple[dict[str, float], float]:
    """(module → the factor its lora_B needs so llama.cpp's ``alpha / r`` gives PEFT's scale,
    the file's alpha); an empty dict when no module needs one."""
    from tifa_lite.merging.adapter import read_adapter
    from tifa_lite.merging.stream import _layer_rank_alpha

    info = read_adapter(adapter_dir)
    cfg = info.peft_config
    if getattr(cfg, "use_dora", False):
        raise ConfigError(f"{adapter_dir}: a DoRA adapter has no llama.cpp form (llama.cpp applies plain LoRA "
                          "only); merge it (`tifa-lite merge`) and export the merged model instead.")
    if info.other_keys:
        raise ConfigError(f"{adapter_dir}: the adapter holds more than LoRA matrices ({info.other_keys[0]}, …), "
                          "which llama.cpp's LoRA files cannot carry; merge it and export the merged model instead.")
    alpha = float(cfg.lora_alpha)
    factors: dict[str, float] = {}
    for module, parts in info.modules.items():
        r_cfg, a = _layer_rank_alpha(cfg, module)
        r = parts["lora_A"].shape[0]
        peft_scale = a / math.sqrt(r_cfg) if cfg.use_rslora else a / r_cfg
        factor = peft_scale * r / alpha
        if abs(factor - 1.0) > 1e-12:
            factors[module] = factor
    return factors, alpha


def _rescaled_copy(adapter_dir: Path, factors: dict[str, float], alpha: float, staging: Path) -> Path:
    """The adapter with each listed module's lora_B scaled and a plain-LoRA config."""
    from safetensors.torch import load_file, save_file

    from tifa_lite.merging.adapter import _KEY_RE

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    for key, tensor in tensors.items():
        m = _KEY_RE.match(key)
        if m and m.group("part").startswith("lora_B") and m.group("module") in factors:
            tensors[key] = (tensor.float() * factors[m.group("module")]).to(tensor.dtype)
    save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    config.update(lora_alpha=alpha, use_rslora=False, rank_pattern={}, alpha_pattern={})
    (staging / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return staging


def _content_key(adapter_dir: Path, base_dir: Path, outtype: str) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        with open(adapter_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    digest.update((base_dir / "config.json").read_bytes())
    digest.update(outtype.encode())
    return digest.hexdigest()[:20]


def convert_lora(adapter_dir: str | Path, out_file: str | Path, *, base: str | Path | None = None,
                 outtype: str = "f16") -> Path:
    """Write ``out_file`` (GGUF LoRA) from a PEFT adapter folder; ``base``: the base's HF folder
    (default: the one the adapter's run names)."""
    adapter_dir = Path(adapter_dir).expanduser().resolve()
    out_file = Path(out_file)
    if outtype not in OUTTYPES:
        raise ConfigError(f"LoRA GGUF type {outtype!r}: use one of {', '.join(OUTTYPES)}.")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{adapter_dir}: no adapter_model.safetensors (llama.cpp's LoRA converter reads that file).")
    base_dir = Path(base).expanduser().resolve() if base else base_folder(adapter_dir)
    if not (base_dir / "config.json").is_file():
        raise ConfigError(f"{base_dir}: no config.json; llama.cpp's LoRA converter needs the base's Hugging Face "
                          "folder (config and tokenizer).")
    factors, alpha = llama_cpp_scales(adapter_dir)
    with tempfile.TemporaryDirectory(prefix=".lora-gguf.", dir=out_file.parent) as tmp:
        source = _rescaled_copy(adapter_dir, factors, alpha, Path(tmp)) if factors else adapter_dir
        partial = Path(tmp) / "adapter.gguf"
        run_script(CONVERTER, ["--base", str(base_dir), "--outfile", str(partial), "--outtype", outtype, str(source)],
                   partial, adapter_dir)
        os.replace(partial, out_file)
    return out_file


def cached_lora_gguf(adapter_dir: str | Path, *, base: str | Path | None = None, outtype: str = "f16") -> Path:
    """The adapter's GGUF LoRA, converted once per content (the cache survives restarts)."""
    adapter_dir = Path(adapter_dir).expanduser().resolve()
    base_dir = Path(base).expanduser().resolve() if base else base_folder(adapter_dir)
    where = cache_root() / "lora-gguf"
    where.mkdir(parents=True, exist_ok=True)
    target = where / f"{adapter_dir.name}-{_content_key(adapter_dir, base_dir, outtype)}.gguf"
    if not target.is_file():
        convert_lora(adapter_dir, target, base=base_dir, outtype=outtype)
    return target


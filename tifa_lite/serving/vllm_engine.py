"""``tifa-lite serve --engine vllm``: ``vllm serve`` on a CUDA GPU, for many users at once
(continuous batching), with the base, the LoRA adapter, our chat template and the recipe's
sampling.

Read in vLLM's CLI (``vllm/engine/arg_utils.py``, ``vllm/config``): ``--enable-lora`` with
``--lora-modules NAME=PATH`` serves the adapter under NAME (the base keeps its own name);
``--max-lora-rank`` must be at least the adapter's ``r``; ``--chat-template FILE`` replaces
the tokenizer's; ``--generation-config vllm`` ignores the folder's generation_config.json and
``--override-generation-config JSON`` sets the defaults a request does not give
(``temperature``, ``top_p``, ``top_k``, ``min_p``, ``repetition_penalty``; ``max_new_tokens``
there is a server-wide cap, our ``--max-tokens-cap``).

What vLLM cannot do as our server does: the requests reach it as sent, so the
``<think>`` history policy holds only where the chat template applies it (our named
templates ``tifa``, ``deepseek_r1``… strip earlier think blocks themselves; a model's own
template may not), ``developer`` and ``name`` are what vLLM's own parser makes of them, and
its 400s are its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tifa_lite.errors import ConfigError
from tifa_lite.serving.engines import EngineSpec

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts


def lora_rank(adapter_dir: Path) -> int:
    r = int(json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("r", 16))
    for allowed in LORA_RANKS:
        if allowed >= r:
            return allowed
    raise ConfigError(f"--adapter {adapter_dir}: LoRA rank {r} is above what vLLM serves ({LORA_RANKS[-1]}).")


def generation_defaults(spec: EngineSpec) -> dict[str, float | int]:
    s = spec.sampling
    greedy = s.get("do_sample") is False
    out: dict[str, float | int] = {
        "temperature": 0.0 if greedy else float(s.get("temperature", 1.0)),
        "top_p": float(s.get("top_p") or 1.0),
        "top_k": int(s.get("top_k") or -1),  # -1: all tokens
        "min_p": float(s.get("min_p") or 0.0),
        "repetition_penalty": float(s.get("repetition_penalty") or 1.0),
    }
    if spec.max_tokens_cap:
        out["max_new_tokens"] = spec.max_tokens_cap
    return out


def vllm_command(spec: EngineSpec, template_file: Path, host: str, port: int, bits: int | None = None,
                 max_model_len: int | None = None, adapters: dict[str, Path] | None = None,
                 cors_origins: list[str] | None = None) -> list[str]:
    """``vllm serve`` for the spec: its one adapter served as the spec's name (the base as
    NAME-base), or ``adapters`` (NAME=PATH, many characters on one base: vLLM's LoRA modules,
    chosen per request by ``model``; the base under the spec's name)."""
    modules = dict(adapters or {})
    if spec.adapter_dir is not None and not modules:
        modules = {spec.model_id: spec.adapter_dir}
    served = f"{spec.model_id}-base" if spec.adapter_dir is not None and not adapters else spec.model_id
    cmd = ["vllm", "serve", spec.base, "--host", host, "--port", str(port), "--served-model-name", served,
           "--chat-template", str(template_file),
           "--generation-config", "vllm", "--override-generation-config", json.dumps(generation_defaults(spec))]
    if modules:
        cmd += ["--enable-lora", "--lora-modules", *(f"{name}={path}" for name, path in modules.items()),
                "--max-lora-rank", str(max(lora_rank(Path(path)) for path in modules.values())),
                "--max-loras", str(len(modules))]
    if cors_origins:
        cmd += ["--allowed-origins", json.dumps(list(cors_origins))]
    if bits == 4:
        cmd += ["--quantization", "bitsandbytes"]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    return cmd


def check_can_run() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--engine vllm needs a CUDA GPU; on this machine serve with the default engine "
                          "(transformers) or --engine llama.cpp.")
    if shutil.which("vllm") is None:
        raise ConfigError("--engine vllm: the `vllm` command is not installed; pip install 'tifa-lite[vllm]'.")


def write_template(spec: EngineSpec, folder: Path) -> Path:
    from tifa_lite.atomic import write_text

    return write_text(folder / f"{spec.model_id}.chat_template.jinja", spec.chat_template)


def serve(spec: EngineSpec, host: str, port: int, bits: int | None = None, adapters: dict[str, Path] | None = None,
          cors_origins: list[str] | None = None) -> int:
    import subprocess

    from tifa_lite.modeling.embedded import cache_root

    check_can_run()
    template = write_template(spec, cache_root() / "serve")
    cmd = vllm_command(spec, template, host, port, bits=bits, adapters=adapters, cors_origins=cors_origins)
    print("starting:", " ".join(cmd), flush=True)
    return subprocess.call(cmd)

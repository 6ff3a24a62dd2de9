"""``export ollama --model BASE --adapter NAME=PATH …``: characters as LoRA adapters on one
base GGUF, in the terms Ollama takes them.

What Ollama takes (its import guide and ``llm/server.go``, read 2026-12; :func:`ollama_terms`
prints it with the installed ``ollama --version``):

- a Modelfile's ``ADAPTER`` applies one LoRA to its ``FROM`` base. A second adapter in one
  model is refused when the model loads ("ollama supports only one lora adapter"), so every
  character is its own Ollama model: ``Modelfile.NAME`` here, ``ollama create NAME -f
  Modelfile.NAME``. The base GGUF is one blob (Ollama stores blobs by digest), but a request
  cannot pick an adapter: the model name does.
- ``ADAPTER`` reads a GGUF LoRA (llama.cpp's ``convert_lora_to_gguf.py`` format, written here
  by :mod:`tifa_lite.export.llamacpp_lora`) or, for Llama, Mistral and Gemma architectures
  only, a safetensors adapter folder. The GGUF form is written, so the architecture list does
  not limit it beyond what llama.cpp's converter knows.
- the adapter is added to the base as plain LoRA; DoRA and extra trained modules are refused
  before anything is written. The base here is the ``--quant`` GGUF (Q4_K_M by default),
  not the NF4 base a QLoRA adapter trained on; ``tifa-lite merge --base-weights dequantized``
  then ``export ollama`` of the merged model is the export closer to training.

Each character's Modelfile has its own TEMPLATE (its run's chat template and ``<think>``
policy), stops and sampling PARAMETERs, checked as :func:`tifa_lite.export.ollama.modelfile_text`
checks them. The folder appears whole or not at all.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError

RULES = (
    "one ADAPTER per Ollama model (a second is refused at load: \"ollama supports only one lora adapter\"), "
    "so each character is its own model on the shared base blob; a request picks a character by model name",
    "ADAPTER takes a GGUF LoRA (written here by llama.cpp's convert_lora_to_gguf.py) or a safetensors adapter "
    "folder for Llama, Mistral and Gemma only",
    "plain LoRA on the quantised base GGUF: no DoRA, no extra trained modules (refused here); a QLoRA adapter "
    "meets a different quantisation than its NF4 training base (merge with --base-weights dequantized for the "
    "closer export)",
)


def installed_ollama() -> str | None:
    """``ollama --version``'s answer, or None where no ``ollama`` is on PATH."""
    exe = shutil.which("ollama")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[-1].strip() if text else None


def ollama_terms() -> dict[str, Any]:
    """What Ollama can and cannot take for adapters, with the installed version (if any)."""
    version = installed_ollama()
    where = version or "no `ollama` on PATH here (the rules below are Ollama's documented ones, read 2026-12)"
    return {"installed": version, "summary": f"Ollama adapters ({where})", "rules": list(RULES)}


def _base_folder(model: str | Path) -> Path:
    from tifa_lite.modeling.embedded import embedded_checkpoint, is_embedded

    if is_embedded(str(model)):
        return embedded_checkpoint(str(model))
    folder = Path(model).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"--model {folder}: no config.json; with --adapter give the base the adapters were "
                          "trained on (a Hugging Face folder or an embedded name).")
    return folder


def export_ollama_characters(
    model: str | Path,
    adapters: dict[str, Path],
    output: str | Path,
    *,
    outtype: str = "q4_k_m",
    recipe: str | Path | None = None,
    system: str | None = None,
    keep_think: bool | None = None,
    overwrite: bool = False,
    check: bool = True,
    converter: str = "llama.cpp",
) -> dict[str, Any]:
    """Write ``output/model.gguf`` (the base), ``NAME.lora.gguf`` and ``Modelfile.NAME`` per character."""
    import gguf
    from transformers import AutoTokenizer

    from tifa_lite.atomic import check_output_path, replacing_dir
    from tifa_lite.conversation.session import resolve_sampling
    from tifa_lite.conversation.templates import think_policy_strips
    from tifa_lite.export.gguf import export_gguf
    from tifa_lite.export.llamacpp_lora import llama_cpp_scales, cached_lora_gguf
    from tifa_lite.export.ollama import GGUF_NAME, modelfile_text
    from tifa_lite.serving.adapters import run_tokenizer

    out = check_output_path(output, "--output")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--output {out} exists and is not empty. Choose another folder or pass --overwrite.")
    base_dir = _base_folder(model)
    base_tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    for folder in adapters.values():
        llama_cpp_scales(folder)  # DoRA and extra modules refused before the long conversions
    characters: dict[str, dict[str, Any]] = {}
    with replacing_dir(out, "exporting") as staging:
        report = export_gguf(base_dir, staging / GGUF_NAME, outtype=outtype, check=check, converter=converter)
        field = gguf.GGUFReader(staging / GGUF_NAME).fields.get("tokenizer.ggml.add_bos_token")
        add_bos = bool(field.contents()) if field is not None else False
        for name, folder in adapters.items():
            lora_name = f"{name}.lora.gguf"
            shutil.copyfile(cached_lora_gguf(folder, base=base_dir), staging / lora_name)
            tokenizer, policy = run_tokenizer(folder, base_tokenizer, keep_think)
            if not tokenizer.chat_template:
                raise ConfigError(f"--adapter {name}={folder}: no chat template for the Modelfile's TEMPLATE.")
            sampling = resolve_sampling(base_dir, folder, recipe)
            text = modelfile_text(tokenizer, sampling, strip_think=think_policy_strips(policy), add_bos=add_bos,
                                  system=system, adapter_file=lora_name)
            (staging / f"Modelfile.{name}").write_text(text, encoding="utf-8")
            characters[name] = {"adapter": str(folder), "lora_gguf": str(out / lora_name),
                                "modelfile": str(out / f"Modelfile.{name}"), "sampling": sampling}
    report.update(output=str(out), gguf=str(out / GGUF_NAME), characters=characters, ollama=ollama_terms())
    return report

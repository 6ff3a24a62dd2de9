"""llama.cpp's own HF → GGUF conversion and quantisation, from the pinned llama-cpp-python
source release (the one ``scripts/install_llama_cpp.sh`` compiles).

That sdist carries llama.cpp itself (``vendor/llama.cpp``): ``convert_hf_to_gguf.py`` (and ``convert_lora_to_gguf.py`` for adapters) with
its ``conversion`` package and its own ``gguf-py`` (the converter puts that one first on
its path, so the ``gguf`` installed here does not matter to it). pip fetches the sdist like
any dependency (``pip download``); the three pieces are extracted once into
``~/.cache/tifa_lite/llama.cpp-<version>`` (never into this repository) and the converter
runs as a subprocess with this Python. It writes f16 / bf16 / q8_0 itself; the K-quants
people run (Q4_K_M, Q5_K_M, Q6_K) come from llama.cpp's quantiser,
``llama_model_quantize`` in the compiled ``libllama`` that llama-cpp-python binds, run on
the converter's 16-bit file.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tifa_lite.errors import TifaError

log = logging.getLogger(__name__)

VERSION = "0.3.36"  # the same pin as scripts/install_llama_cpp.sh and the `llamacpp` extra
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
_VENDOR = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
_SCRIPTS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py")
_MEMBERS = (*_SCRIPTS, "conversion/", "gguf-py/", "LICENSE")

# outtype → how it is made: the converter's own --outtype, or libllama's ftype constant.
CONVERTER_TYPES = {"f16": "f16", "bf16": "bf16", "q8_0": "q8_0"}
QUANTISER_TYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
                   "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K"}
OUTTYPES = (*QUANTISER_TYPES, *CONVERTER_TYPES)
CONVERTERS = ("llama.cpp", "builtin")  # builtin: tifa_lite.export.gguf's own writer (f16/q8_0)
QUANTISER_HINT = ("{outtype} is made by llama.cpp's quantiser (llama_model_quantize in libllama), and "
                  "llama-cpp-python is not installed: run `bash scripts/install_llama_cpp.sh` once (it compiles "
                  "llama.cpp once, about 5 minutes on 2 idle cores; the wheel is cached), or export f16/bf16/q8_0, which need no compile.")


class LlamaCppError(TifaError):
    """llama.cpp's converter or quantiser could not run or failed."""


def cache_root() -> Path:
    return Path(os.environ.get("TIFA_LITE_CACHE", Path.home() / ".cache" / "tifa_lite"))


def converter_dir() -> Path:
    """The extracted converter (fetched and extracted on first use)."""
    target = cache_root() / f"llama.cpp-{VERSION}"
    if all((target / script).is_file() for script in _SCRIPTS):
        return target
    sdist = _sdist()
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                rel = member.name.removeprefix(_VENDOR)
                if rel != member.name and rel.startswith(_MEMBERS) and (member.isfile() or member.isdir()):
                    member.name = rel
                    tar.extract(member, staging, filter="data")
        missing = [script for script in _SCRIPTS if not (staging / script).is_file()]
        if missing:
            raise LlamaCppError(f"{sdist} holds no vendor/llama.cpp/{missing[0]}; delete it and retry.")
        if all((target / script).is_file() for script in _SCRIPTS):  # another process finished first
            shutil.rmtree(staging)
        else:
            if target.exists():  # an extraction from before the LoRA converter was needed
                shutil.rmtree(target)
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _sdist() -> Path:
    where = cache_root() / "sdist"
    found = where / SDIST
    if found.is_file():
        return found
    where.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-d", str(where),
           f"llama-cpp-python=={VERSION}"]
    log.info("fetching llama.cpp's converter: %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not found.is_file():
        raise LlamaCppError(
            f"could not fetch llama-cpp-python {VERSION}'s source release (it carries llama.cpp's "
            f"convert_hf_to_gguf.py): {done.stderr.strip()[-400:]}\nRun `{' '.join(cmd)}` where PyPI is reachable, "
            f"or put {SDIST} into {where}.")
    return found


def convert(model_dir: Path, out_file: Path, outtype: str) -> None:
    """``convert_hf_to_gguf.py model_dir --outfile out_file --outtype outtype`` (f16/bf16/q8_0/auto)."""
    import importlib.util

    if importlib.util.find_spec("sentencepiece") is None:
        raise LlamaCppError("llama.cpp's convert_hf_to_gguf.py needs sentencepiece: pip install 'tifa-lite[gguf]' "
                            "(or pip install sentencepiece), or use --converter builtin for f16/q8_0.")
    run_script("convert_hf_to_gguf.py", [str(model_dir), "--outfile", str(out_file), "--outtype", outtype],
               out_file, model_dir)


def run_script(script: str, args: list[str], out_file: Path, source: Path) -> None:
    """One of llama.cpp's converters with this Python; its own last error line if it fails."""
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # its own gguf-py, not ours
    done = subprocess.run([sys.executable, str(converter_dir() / script), *args], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0 or not out_file.is_file():
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit code {done.returncode}"  # the converter's own error
        tail = "\n".join(lines[-6:])
        raise LlamaCppError(f"llama.cpp's {script} failed on {source}: {reason}\n{tail}")


def quantize(src: Path, dst: Path, outtype: str, threads: int | None = None) -> None:
    """llama.cpp's quantiser (the library behind ``llama-quantize``) from a 16-bit GGUF."""
    try:
        import llama_cpp
    except ImportError:
        raise LlamaCppError(QUANTISER_HINT.format(outtype=outtype)) from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTISER_TYPES[outtype])
    params.nthread = threads or min(4, os.cpu_count() or 1)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.is_file():
        raise LlamaCppError(f"llama.cpp's quantiser failed ({outtype}, return code {rc}) on {src}.")


def write_gguf(model_dir: Path, out_file: Path, outtype: str) -> None:
    """``outtype`` ∈ :data:`OUTTYPES`: the converter alone, or the converter to 16-bit then the quantiser."""
    if outtype in CONVERTER_TYPES:
        convert(model_dir, out_file, CONVERTER_TYPES[outtype])
        return
    try:
        import llama_cpp  # noqa: F401  (fail before the long conversion)
    except ImportError:
        raise LlamaCppError(QUANTISER_HINT.format(outtype=outtype)) from None
    intermediate = out_file.with_name(out_file.name + ".16bit.gguf")
    try:
        convert(model_dir, intermediate, "auto")  # f16 or bf16, as the model's dtype is
        quantize(intermediate, out_file, outtype)
    finally:
        intermediate.unlink(missing_ok=True)

"""Which library loads and patches the model: plain transformers + PEFT, or unsloth.

``model.backend: auto`` is always transformers: this project has run unsloth only against
a stand-in of its API (the contract tests in ``tests/backends``), never for real, and
``auto`` must not pick a backend that has not run here. ``model.backend: unsloth`` is the
explicit opt-in; it falls back to transformers, with one warning saying why, when unsloth
is missing, too old for the call shape we use, the GPU cannot run it, or the recipe asks
for something its fast path would silently change.

unsloth is never imported here (importing it patches transformers and TRL, and fails
without a CUDA GPU): whether it could run is decided from ``importlib.util.find_spec``,
its installed version, the GPU's compute capability and the recipe; the recipe itself is
never changed, so both backends train the same configuration.
"""

from __future__ import annotations

import importlib.util
import logging

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.hardware import Hardware

log = logging.getLogger(__name__)

# unsloth's README: "Minimum CUDA Capability 7.0 (V100, T4, Titan V, RTX 20, 30, 40x, A100, H100, L40 etc)".
MIN_CAPABILITY = (7, 0)
# get_peft_model in unsloth's fast path only lets these two through modules_to_save.
UNSLOTH_MODULES_TO_SAVE = {"lm_head", "embed_tokens"}
INSTALL_HINT = "pip install 'tifa-lite[unsloth]'"
# FastLanguageModel.from_pretrained with load_in_8bit / full_finetuning (unsloth's March 2025 API):
# the signature the stand-in in tests/backends copies, so the call shape contract-tested there.
MIN_VERSION = "2025.3"
AUTO_REASON = ("model.backend=auto uses transformers: unsloth has not been run for real by this project "
               "(only contract tests of our call shape); set model.backend=unsloth to opt in")


def unsloth_installed() -> bool:
    try:
        return importlib.util.find_spec("unsloth") is not None
    except (ImportError, ValueError):
        # ValueError: a half-imported module in sys.modules without a __spec__.
        return False


def cuda_capability(hardware: Hardware) -> tuple[int, int] | None:
    if hardware.device != "cuda":
        return None
    import torch

    return tuple(torch.cuda.get_device_capability(0))


def unsloth_blocker(config: RecipeConfig, hardware: Hardware) -> str | None:
    """Why unsloth cannot train this recipe here, or None when it can."""
    if hardware.device != "cuda":
        return "no CUDA GPU found, and unsloth's kernels run on NVIDIA GPUs only"
    capability = cuda_capability(hardware)
    if capability is not None and tuple(capability) < MIN_CAPABILITY:
        return (
            f"{hardware.gpu_name} has compute capability {capability[0]}.{capability[1]}; "
            f"unsloth needs {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}+ (V100, T4 or newer)"
        )
    if not unsloth_installed():
        return f"unsloth is not installed ({INSTALL_HINT})"
    too_old = version_blocker()
    return too_old or recipe_blocker(config)


def version_blocker() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import InvalidVersion, Version

    try:
        installed = version("unsloth")
    except PackageNotFoundError:
        return None  # importable without metadata (a source checkout): nothing to compare
    try:
        if Version(installed) >= Version(MIN_VERSION):
            return None
    except InvalidVersion:
        return f"unsloth's version {installed!r} cannot be read; tifa_lite's loader needs {MIN_VERSION} or newer"
    return f"unsloth {installed} is older than {MIN_VERSION}, the API tifa_lite's loader calls ({INSTALL_HINT} --upgrade)"


def recipe_blocker(config: RecipeConfig) -> str | None:
    """Recipe settings unsloth's fast path would silently change; we fall back instead,
    so that ``backend: auto`` never trains a different configuration than the recipe says."""
    lo, q = config.lora, config.quant
    if not lo.enabled:
        return "lora.enabled=false (the unsloth path here is LoRA/QLoRA only)"
    if config.model.layer_loop is not None:
        return "model.layer_loop is set (the loop is built on the transformers model, tifa_lite.modeling.layer_loop)"
    if config.train.method == "reward":
        return "train.method=reward needs a sequence-classification head; unsloth's FastLanguageModel loads causal LMs"
    if config.distributed.deepspeed or config.distributed.world_size > 1:
        return "the recipe is distributed (DeepSpeed / world_size>1); this unsloth path is single-GPU"
    if config.model.gguf_file or config.model.name_or_path.endswith(".gguf"):
        return "the model is a GGUF file; unsloth loads Hugging Face checkpoints"
    if q.bits == 8:
        return "quant.bits=8; unsloth's fast path is 4-bit (QLoRA) or 16-bit LoRA"
    if q.bits == 4 and (q.quant_type != "nf4" or not q.double_quant):
        return "unsloth always quantises with NF4 + double quantisation; the recipe asks for " \
               f"quant_type={q.quant_type}, double_quant={q.double_quant}"
    if lo.use_dora:
        return "lora.use_dora=true; unsloth's fast LoRA kernels do not cover DoRA"
    if isinstance(lo.target_modules, str) and lo.target_modules != "all-linear":
        return "lora.target_modules is a regex; unsloth takes a list of module names (or all-linear)"
    extra = set(lo.modules_to_save or []) - UNSLOTH_MODULES_TO_SAVE
    if extra:
        return f"lora.modules_to_save={sorted(extra)}; unsloth only trains lm_head / embed_tokens in full"
    return None


def select_backend(config: RecipeConfig, hardware: Hardware) -> tuple[str, str]:
    """``(name, reason)`` with name ``"unsloth"`` or ``"transformers"``. ``auto`` is
    transformers (see the module docstring); an explicit ``unsloth`` that cannot run falls
    back with one warning saying why."""
    requested = config.model.backend
    if requested == "transformers":
        return "transformers", "model.backend=transformers"
    if requested == "auto":
        log.info("%s.", AUTO_REASON)
        return "transformers", AUTO_REASON
    blocker = unsloth_blocker(config, hardware)
    if blocker is None:
        log.warning("model.backend=unsloth on %s: an opt-in this project has contract-tested, not run for real.",
                    hardware.gpu_name)
        return "unsloth", f"model.backend=unsloth, installed, and {hardware.gpu_name} is supported"
    log.warning("model.backend=unsloth: loading with transformers instead, because %s.", blocker)
    return "transformers", blocker

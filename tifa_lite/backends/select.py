"""Which library loads and patches the model: plain transformers + PEFT, or unsloth.

unsloth is optional and GPU-only: it is never imported here (importing it patches
transformers and TRL, and fails without a CUDA GPU). Whether it *could* run is decided
from ``importlib.util.find_spec``, the GPU's compute capability and the recipe; the
recipe itself is never changed, so both backends train the same configuration.
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
    return recipe_blocker(config)


def recipe_blocker(config: RecipeConfig) -> str | None:
    """Recipe settings unsloth's fast path would silently change; we fall back instead,
    so that ``backend: auto`` never trains a different configuration than the recipe says."""
    lo, q = config.lora, config.quant
    if not lo.enabled:
        return "lora.enabled=false (the unsloth path here is LoRA/QLoRA only)"
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
    """``(name, reason)`` with name ``"unsloth"`` or ``"transformers"``. When unsloth was
    asked for (explicitly: a warning) or could have been picked (``auto``: info) but
    cannot run, one log line says why."""
    requested = config.model.backend
    if requested == "transformers":
        return "transformers", "model.backend=transformers"
    blocker = unsloth_blocker(config, hardware)
    if blocker is None:
        return "unsloth", f"unsloth is installed and {hardware.gpu_name} is supported"
    if requested == "unsloth":
        log.warning("model.backend=unsloth: loading with transformers instead, because %s.", blocker)
    else:
        log.info("model.backend=auto: using transformers, because %s.", blocker)
    return "transformers", blocker

"""``train.use_liger_kernel`` → whether this run gets Liger's Triton kernels, decided in the run
plan before anything loads.

transformers applies them when TRL's ``use_liger_kernel`` is set (RMSNorm, RoPE, SwiGLU; TRL
1.16 refuses Liger's fused linear cross-entropy because it has its own fused LM head). They are
Triton kernels: CUDA only. A CPU run (a card's rehearsal included) trains without them and says
so, so a recipe written for the GPU still runs there; on CUDA a missing or broken liger-kernel
stops the run at once with what to install, not after the model has loaded.

TRL 1.16 marks ``use_liger_kernel`` deprecated in favour of Hub kernels
(``model_init_kwargs={"use_kernels": True}``); those are downloaded at load time and apply only to
a model TRL loads itself, while tifa_lite loads the model and trains where no hub may be reachable,
so the Liger switch is the one used here.
"""

from __future__ import annotations

import logging

from tifa_lite.errors import ConfigError

log = logging.getLogger(__name__)


def liger_importable() -> tuple[bool, str]:
    """(usable, why not). transformers' own check first (liger-kernel >= 0.3.0), then an import:
    a wheel built against another torch passes the metadata check and fails on import."""
    from transformers.utils import is_liger_kernel_available

    if not is_liger_kernel_available():
        return False, "liger-kernel (>= 0.3.0) is not installed"
    try:
        import liger_kernel.transformers  # noqa: F401  (imports triton)
    except Exception as exc:  # ImportError, or an ABI mismatch surfacing as OSError/RuntimeError
        return False, f"liger_kernel does not import ({type(exc).__name__}: {exc})"
    return True, ""


def select_liger(requested: bool, *, device: str, importable: tuple[bool, str] | None = None) -> tuple[bool, str | None]:
    """``(use it, substitute note or None)``."""
    if not requested:
        return False, None
    if device != "cuda":
        return False, "Liger kernels → PyTorch's own ops (Liger's Triton kernels need a CUDA GPU)"
    usable, why = importable if importable is not None else liger_importable()
    if not usable:
        raise ConfigError(
            f"train.use_liger_kernel=true but {why}. Install it (pip install liger-kernel; on a machine without a "
            "package index carry its wheel, see scripts/gpu_fullsize.sh --help) or set train.use_liger_kernel=false."
        )
    return True, None

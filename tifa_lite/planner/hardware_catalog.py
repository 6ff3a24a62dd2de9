"""GPUs the planner knows: memory, bf16 and FlashAttention-2 support.

Memory is what ``torch.cuda.get_device_properties().total_memory`` reports (GiB), e.g. a
"16 GB" T4 shows 15.0 GiB (Colab's T4 reports 14.74 GiB). bf16 needs compute capability
≥ 8.0 (Ampere); FlashAttention-2 needs Ampere or newer as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from tifa_lite.errors import ConfigError
from tifa_lite.hardware import REHEARSED_CARDS


@dataclass(frozen=True)
class GPU:
    name: str
    label: str
    memory_gib: float
    bf16: bool
    flash_attn2: bool
    compute_capability: tuple[int, int]


GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("t4", "NVIDIA T4 16 GB (Colab/Kaggle free)", REHEARSED_CARDS["t4"].memory_gib, False, False,
            REHEARSED_CARDS["t4"].compute_capability),
        GPU("a10", "NVIDIA A10 24 GB (ModelScope free notebook)", REHEARSED_CARDS["a10"].memory_gib, True, True,
            REHEARSED_CARDS["a10"].compute_capability),
        GPU("l4", "NVIDIA L4 24 GB", 22.03, True, True, (8, 9)),
        GPU("rtx3090", "GeForce RTX 3090 24 GB", 23.69, True, True, (8, 6)),
        GPU("rtx4090", "GeForce RTX 4090 24 GB", 23.65, True, True, (8, 9)),
        GPU("8gb", "any 8 GB consumer card (RTX 3060 Ti/3070/4060)", 7.6, True, True, (8, 6)),
        GPU("a100-40g", "NVIDIA A100 40 GB", 39.39, True, True, (8, 0)),
        GPU("a100-80g", "NVIDIA A100 80 GB", 79.15, True, True, (8, 0)),
        GPU("h100", "NVIDIA H100 80 GB", 79.11, True, True, (9, 0)),
    )
}

_NAME_HINTS = (
    ("t4", "t4"), ("a10g", "a10"), ("a10", "a10"), ("l4", "l4"), ("3090", "rtx3090"), ("4090", "rtx4090"),
    ("h100", "h100"), ("a100", None),
)


def gpu_by_name(name: str) -> GPU:
    key = name.lower().replace("_", "-")
    aliases = {"modelscope-free": "a10", "modelscope": "a10", "a100": "a100-80g", "4090": "rtx4090", "3090": "rtx3090"}
    key = aliases.get(key, key)
    if key not in GPUS:
        raise ConfigError(f"hardware.gpu={name!r}: unknown GPU. Known: {', '.join(GPUS)} (or auto).")
    return GPUS[key]


def gpu_from_detected(gpu_name: str | None, total_memory_gib: float | None, bf16: bool | None = None) -> GPU | None:
    """Map a detected CUDA device (tifa_lite.hardware.Hardware fields) onto the catalogue.

    bf16 is the runtime's answer (``Hardware.bf16``, i.e. :func:`tifa_lite.hardware.supports_bf16`,
    asked here when not given), not the catalogue's: so a plan and the run agree, also when
    ``TIFA_LITE_NO_BF16=1`` treats an A10 as a T4 (then FlashAttention-2 is off too). An
    unknown card is described by its own memory and that flag."""
    if gpu_name is None or total_memory_gib is None:
        return None
    if bf16 is None:
        from tifa_lite.hardware import supports_bf16

        bf16 = supports_bf16()
    lowered = gpu_name.lower()
    for hint, key in _NAME_HINTS:
        if hint in lowered:
            if key is None:  # A100: the memory tells 40 from 80 GB
                key = "a100-80g" if total_memory_gib > 60 else "a100-40g"
            known = GPUS[key]
            capability = known.compute_capability if bf16 else min(known.compute_capability, (7, 5))
            return GPU(known.name, gpu_name, total_memory_gib, bf16, known.flash_attn2 and bf16, capability)
    return GPU("detected", gpu_name, total_memory_gib, bf16, bf16, (8, 0) if bf16 else (7, 5))

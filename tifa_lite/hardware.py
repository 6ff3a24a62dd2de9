"""What the machine can do, and the precision that follows from it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hardware:
    device: str  # "cuda" | "cpu"
    gpu_name: str | None
    bf16: bool
    gpu_count: int
    total_memory_gib: float | None


def detect() -> Hardware:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware(
            device="cuda",
            gpu_name=props.name,
            bf16=torch.cuda.is_bf16_supported(),
            gpu_count=torch.cuda.device_count(),
            total_memory_gib=props.total_memory / 2**30,
        )
    return Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)


def resolve_precision(requested: str, hardware: Hardware | None = None) -> str:
    """auto → bf16 where the GPU has it, fp16 on older GPUs (T4), fp32 on the CPU.

    An explicit bf16 on a GPU without it is downgraded to fp16 with a warning rather
    than crashing half-way through the first step, which is what T4 users hit otherwise.
    """
    hardware = hardware or detect()
    if hardware.device == "cpu":
        if requested not in ("auto", "fp32"):
            log.warning("precision=%s requested on the CPU: training in fp32 instead.", requested)
        else:
            log.warning("No CUDA GPU found: training in fp32 on the CPU (slow; fine for tests and rehearsals).")
        return "fp32"
    if requested == "auto":
        return "bf16" if hardware.bf16 else "fp16"
    if requested == "bf16" and not hardware.bf16:
        log.warning("%s has no bf16: switching precision to fp16.", hardware.gpu_name)
        return "fp16"
    return requested


def torch_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]

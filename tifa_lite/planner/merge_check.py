"""Where a merge's self-check can hold its model: pure arithmetic (no torch), shared by
the self-check itself and the planner (``tifa-lite plan`` prints the check's peak).

One model is in memory at a time. Preferred, in order: the whole model on the GPU in the
output dtype; fp32 on the CPU when RAM holds the fp32 model twice (a more exact check:
it measures the output dtype's rounding noise); the model split between the GPU and RAM
(accelerate's device map); the output dtype on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# On the GPU a model needs its weights plus the CUDA context, the allocator's rounding and
# the activations of a short prompt: weights x GPU_HEADROOM + GPU_RESERVE.
GPU_HEADROOM = 1.05
GPU_RESERVE = 768 * 2**20


@dataclass(frozen=True)
class CheckPlacement:
    placement: str  # "cuda" | "cuda+cpu" | "cpu"
    compute: str  # dtype name the check computes in
    model_bytes: int  # one model in the compute dtype
    gpu_bytes: int  # at most this much of it on the GPU
    why: str


def gpu_bytes_needed(weights_dtype: str, param_bytes_fp32: int) -> int:
    """What the whole-GPU check needs: the model in the output dtype, plus headroom."""
    return int(param_bytes_fp32 * DTYPE_BYTES[weights_dtype] // 4 * GPU_HEADROOM) + GPU_RESERVE


def plan_check(weights_dtype: str, param_bytes_fp32: int, gpu_free: int | None, ram_free: int) -> CheckPlacement:
    """``gpu_free`` is None without CUDA."""
    half = param_bytes_fp32 * DTYPE_BYTES[weights_dtype] // 4
    need_gpu = gpu_bytes_needed(weights_dtype, param_bytes_fp32)
    if gpu_free is not None and need_gpu <= gpu_free:
        return CheckPlacement("cuda", weights_dtype, half, half, f"the {_gib(half)} model fits the GPU's {_gib(gpu_free)} free")
    if param_bytes_fp32 * 2 < ram_free:
        on_gpu = "" if gpu_free is None else f"; the GPU has {_gib(gpu_free)} free of the {_gib(need_gpu)} needed"
        return CheckPlacement("cpu", "fp32", param_bytes_fp32, 0,
                              f"fp32 on the CPU: {_gib(ram_free)} free RAM holds the {_gib(param_bytes_fp32)} model twice{on_gpu}")
    on_gpu = 0 if gpu_free is None else max(0, min(half, int((gpu_free - GPU_RESERVE) / GPU_HEADROOM)))
    if on_gpu and half - on_gpu < ram_free:
        return CheckPlacement("cuda+cpu", weights_dtype, half, on_gpu,
                              f"split: {_gib(on_gpu)} of the {_gib(half)} model on the GPU, the rest in RAM")
    return CheckPlacement("cpu", weights_dtype, half, 0,
                          f"{weights_dtype} on the CPU: fp32 would not fit {_gib(ram_free)} free RAM"
                          + ("" if half < ram_free else " (nor does this; expect swapping or an out-of-memory kill)"))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def describe_for_card(weights_dtype: str, param_bytes_fp32: int, gpu_memory: int | None) -> str:
    """One line for ``tifa-lite plan``: where the merge self-check of this model will run on a card
    (a whole card: the check runs after training), before RAM is known."""
    need = gpu_bytes_needed(weights_dtype, param_bytes_fp32)
    if gpu_memory is not None and need <= gpu_memory:
        return f"{_gib(need)} on the GPU in {weights_dtype}: fits"
    card = "no GPU" if gpu_memory is None else f"needs {_gib(need)} in {weights_dtype}, more than the card's {_gib(gpu_memory)}"
    return (f"{card}: runs in fp32 on the CPU with {_gib(2 * param_bytes_fp32)} free RAM, "
            f"else split between the GPU and RAM")

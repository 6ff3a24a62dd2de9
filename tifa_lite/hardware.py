"""What the machine can do, and the precision that follows from it.

:func:`supports_bf16` is the one place that decides whether a GPU computes in bf16:
the runtime (:func:`detect`, :func:`resolve_precision`), the planner's catalogue
(``planner.hardware_catalog.gpu_from_detected``), FlashAttention-2's choice and the
notebooks all read it. ``TIFA_LITE_NO_BF16=1`` makes it answer "no" on any GPU, i.e.
treat the card as a T4: fp16 compute, no FlashAttention-2. That is how a T4 run is
reproduced (and checked, ``tests/gpu``) on a newer card.

``TIFA_LITE_REHEARSE=t4`` / ``a10`` is the same idea on the CPU: :func:`detect` reports the
card (its name, compute capability and memory) while the tensors stay on the CPU, so every
decision that follows — fp16 + a loss scaler on a T4, bf16 on an A10, the 4-bit compute
dtype, the adapter and norm dtypes — is the card's, and runs for real in the card's dtypes
(CPU autocast, ``torch.amp.GradScaler("cpu")``, bitsandbytes NF4 with a 16-bit compute
dtype). Only the CUDA kernels differ: what stands in for them is listed in the run plan
(:mod:`tifa_lite.runplan`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the planner reads this module without it
    import torch

log = logging.getLogger(__name__)

NO_BF16_ENV = "TIFA_LITE_NO_BF16"
REHEARSE_ENV = "TIFA_LITE_REHEARSE"
# bf16 tensor-core math (and FlashAttention-2) start with Ampere, compute capability 8.0.
AMPERE = (8, 0)


@dataclass(frozen=True)
class RehearsedCard:
    name: str  # as torch.cuda.get_device_name reports it
    compute_capability: tuple[int, int]
    memory_gib: float  # torch.cuda.get_device_properties().total_memory on Colab's / ModelScope's card


# The cards the kit is sized for, as the CPU rehearses them (the planner's catalogue reads these too).
REHEARSED_CARDS = {
    "t4": RehearsedCard("Tesla T4", (7, 5), 14.74),
    "a10": RehearsedCard("NVIDIA A10", (8, 6), 22.06),
}


@dataclass(frozen=True)
class Hardware:
    device: str  # where the tensors live: "cuda" | "cpu"
    gpu_name: str | None
    bf16: bool
    gpu_count: int
    total_memory_gib: float | None
    # "t4" | "a10" when the CPU rehearses that card (TIFA_LITE_REHEARSE): device stays "cpu",
    # the rest describes the card.
    rehearsal: str | None = None

    @property
    def card(self) -> str:
        if self.rehearsal:
            return f"{self.gpu_name} (rehearsed on the CPU)"
        return self.gpu_name or "CPU"


def rehearsal() -> str | None:
    """``TIFA_LITE_REHEARSE``: None, or the card the CPU rehearses."""
    from tifa_lite.errors import ConfigError

    value = os.environ.get(REHEARSE_ENV, "").strip().lower()
    if value in ("", "0", "off", "none"):
        return None
    if value not in REHEARSED_CARDS:
        raise ConfigError(
            f"{REHEARSE_ENV}={value!r}: the CPU rehearses {' or '.join(REHEARSED_CARDS)} (or unset it)."
        )
    return value


@contextlib.contextmanager
def rehearsing(card: str | None):
    """The CPU rehearses ``card`` ("t4" | "a10"; "cpu" or None: no rehearsal) inside the block,
    for in-process harnesses (the zoo matrix, the planner's measurements); restored after."""
    before = os.environ.get(REHEARSE_ENV)
    if card in (None, "cpu"):
        os.environ.pop(REHEARSE_ENV, None)
    else:
        os.environ[REHEARSE_ENV] = card
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(REHEARSE_ENV, None)
        else:
            os.environ[REHEARSE_ENV] = before


def treated_as_t4() -> bool:
    """The documented switch: ``TIFA_LITE_NO_BF16=1`` (any of 1/true/yes)."""
    return os.environ.get(NO_BF16_ENV, "").strip().lower() in ("1", "true", "yes")


def supports_bf16(device_index: int = 0) -> bool:
    """Whether CUDA device ``device_index`` computes in bf16: compute capability ≥ 8.0.

    Not ``torch.cuda.is_bf16_supported()``: since torch 2.3 it defaults to
    ``including_emulation=True`` and answers True on a T4 (7.5), where bf16 matmuls are
    emulated: slow, and the NaN-prone path T4 users of other kits report."""
    import torch

    if treated_as_t4() or not torch.cuda.is_available():
        return False
    return tuple(torch.cuda.get_device_capability(device_index)) >= AMPERE


def adapter_dtype_name(precision: str) -> str:
    """The dtype trainable weights (LoRA adapters, a reward model's score head) are kept in:
    ``"fp32"`` under every precision, bf16 compute included.

    TRL 1.16 stores a quantised model's trainable weights in bf16 (after the QLoRA paper);
    bf16 keeps 8 bits of mantissa, so an Adam update smaller than ~2**-9 of a weight is
    lost. Measured (benchmarks/results/precision.md, QLoRA GRPO at the recipes' 2e-5, 12
    steps): 95% of the lora_A weights stored in bf16 never moved, none in fp32. Under fp16
    compute the GradScaler needs fp32 weights anyway. The cost is 2 bytes more per trainable
    parameter for the weight and each of its gradient and two Adam moments (the planner
    counts it: +1.5 GiB for the 7B r64 A10 recipes, +0.26 GiB for the r16 GRPO one).
    ``precision`` stays the argument so a future exception has one place to go.
    """
    return "fp32"


def adapter_dtype(precision: str) -> "torch.dtype":
    """:func:`adapter_dtype_name` as a torch dtype."""
    return torch_dtype(adapter_dtype_name(precision))


def detect() -> Hardware:
    """This machine, or under ``TIFA_LITE_REHEARSE`` the card the CPU rehearses."""
    import torch

    rehearsed = rehearsal()
    if rehearsed:
        card = REHEARSED_CARDS[rehearsed]
        bf16 = tuple(card.compute_capability) >= AMPERE and not treated_as_t4()
        return Hardware(device="cpu", gpu_name=card.name, bf16=bf16, gpu_count=1,
                        total_memory_gib=card.memory_gib, rehearsal=rehearsed)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware(
            device="cuda",
            gpu_name=props.name,
            bf16=supports_bf16(0),
            gpu_count=torch.cuda.device_count(),
            total_memory_gib=props.total_memory / 2**30,
        )
    return Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)


def native_precision(hardware: Hardware | None = None) -> str:
    """What this machine computes in best: bf16 on a GPU that has it, fp16 on older GPUs
    (T4), fp32 on the CPU (what ``precision: auto`` and a merge's ``dtype: auto`` pick)."""
    hardware = hardware or detect()
    if hardware.device == "cpu" and not hardware.rehearsal:
        return "fp32"
    return "bf16" if hardware.bf16 else "fp16"


def resolve_precision(requested: str, hardware: Hardware | None = None, quiet: bool = False) -> str:
    """auto → bf16 where the GPU has it, fp16 on older GPUs (T4), fp32 on the CPU (the rehearsed
    card's answer under ``TIFA_LITE_REHEARSE``). ``quiet``: no warnings (the planner, which asks
    about a catalogue card, not this run).

    An explicit bf16 on a GPU without it is downgraded to fp16 with a warning rather
    than crashing half-way through the first step, which is what T4 users hit otherwise.
    """
    hardware = hardware or detect()
    if hardware.device == "cpu" and not hardware.rehearsal:
        if not quiet and requested not in ("auto", "fp32"):
            log.warning("precision=%s requested on the CPU: training in fp32 instead.", requested)
        elif not quiet:
            log.warning("No CUDA GPU found: training in fp32 on the CPU (slow; fine for tests and rehearsals).")
        return "fp32"
    if requested == "auto":
        return native_precision(hardware)
    if requested == "bf16" and not hardware.bf16:
        if not quiet:
            log.warning("%s has no bf16: switching precision to fp16.", hardware.gpu_name)
        return "fp16"
    return requested


def torch_dtype(precision: str) -> "torch.dtype":
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]

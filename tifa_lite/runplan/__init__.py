"""The run plan: every hardware-dependent decision of one run, made once.

:func:`resolve_plan` is called right after the recipe is loaded (training) or the model is
named (chat, serve, eval, merge, pairs, the reward-model reward, the quickstart); from the
one hardware truth (:func:`tifa_lite.hardware.detect`) it decides the device and card,
precision, autocast and loss scaler, the dtypes of weights / 4-bit compute / adapters /
norms (:mod:`tifa_lite.runplan.numerics`), the attention implementation, the backend and
the model's source. The loader, the methods and the inference loaders read the frozen
:class:`RunPlan` and never decide again; a training run prints it in its first lines and
saves it as ``run_plan.json`` beside its outputs.

Under ``TIFA_LITE_REHEARSE=t4|a10`` the plan is the card's, run on the CPU; what the CPU
cannot run (FlashAttention-2, vLLM, the CUDA kernels of bitsandbytes and of fp16/bf16
matmuls) is named in :attr:`RunPlan.substitutes`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tifa_lite.hardware import Hardware, detect, resolve_precision
from tifa_lite.runplan.numerics import Numerics, resolve_numerics

if TYPE_CHECKING:
    from tifa_lite.config.schema import RecipeConfig
    from tifa_lite.modeling.resolve import ResolvedModel

log = logging.getLogger(__name__)

PLAN_FILE = "run_plan.json"


@dataclass(frozen=True)
class RunPlan:
    purpose: str  # "train" | "inference"
    hardware: Hardware
    numerics: Numerics
    attn_implementation: str
    backend: str  # "transformers" | "unsloth"
    backend_reason: str
    model: "ResolvedModel"
    world_size: int = 1
    vllm: bool = False  # GRPO generates with vLLM (colocated)
    dequantized_generation: bool = False  # GRPO generates from a dense copy of the 4-bit base
    liger_kernel: bool = False  # Liger's Triton kernels patched in by transformers (train.use_liger_kernel)
    substitutes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def device(self) -> str:
        return self.hardware.device

    @property
    def precision(self) -> str:
        return self.numerics.precision

    @property
    def rehearsal(self) -> str | None:
        return self.hardware.rehearsal

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["card"] = self.hardware.card
        data["model"] = {"path": self.model.path, "gguf_file": self.model.gguf_file, "origin": self.model.origin}
        return data

    def describe(self) -> list[str]:
        n = self.numerics
        lines = [
            f"card: {self.hardware.card}; tensors on {self.device}; world {self.world_size}",
            (f"precision {n.precision}: autocast {n.autocast or 'off'}, loss scaler {'on' if n.grad_scaler else 'off'}; "
             f"weights {n.weight_dtype}" + (f", 4-bit compute {n.quant_compute_dtype}" if n.quant_compute_dtype else "")
             + (f", adapters {n.adapter_dtype}" if n.adapter_dtype else "") + (f", norms {n.norm_dtype}" if n.norm_dtype else "")),
            f"attention {self.attn_implementation}; backend {self.backend}; model {self.model.origin}"
            + ("; GRPO generation vLLM (colocated)" if self.vllm else "")
            + ("; GRPO generation from the 4-bit base dequantised once per call" if self.dequantized_generation else "")
            + ("; Liger kernels" if self.liger_kernel else ""),
        ]
        lines += [f"substitute: {s}" for s in self.substitutes]
        return lines

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=list) + "\n"


def local_architecture(path: str) -> str | None:
    """The model class a local checkpoint's config.json names (None for a hub id or a GGUF)."""
    import json
    from pathlib import Path

    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return None
    try:
        architectures = json.loads(config_file.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None  # the loader reports a broken config.json with its own message
    return architectures[0] if architectures else None


def resolve_plan(config: "RecipeConfig", *, purpose: str = "train", hardware: Hardware | None = None,
                 precision: str | None = None) -> RunPlan:
    """The plan for ``config``. ``precision`` overrides ``train.precision`` (the inference
    loaders' ``--dtype``/``precision`` argument); ``hardware`` is for tests and the planner."""
    from tifa_lite.backends.select import select_backend
    from tifa_lite.modeling.attention import choose_attention
    from tifa_lite.modeling.resolve import resolve_model

    hardware = hardware or detect()
    training = purpose == "train"
    resolved_precision = resolve_precision(precision or config.train.precision, hardware)
    numerics = resolve_numerics(
        resolved_precision, quant_bits=config.quant.bits, quant_compute=config.quant.compute_dtype,
        lora=config.lora.enabled, deepspeed=bool(config.distributed.deepspeed), training=training,
    )
    model = resolve_model(config.model)
    attention, attention_note = choose_attention(config, hardware, resolved_precision, local_architecture(model.path))
    if training:
        backend, reason = select_backend(config, hardware)
    else:
        backend, reason = "transformers", "inference loads through transformers"
    substitutes = [attention_note] if attention_note else []
    liger = False
    if training:
        from tifa_lite.runplan.kernels import select_liger

        liger, liger_note = select_liger(config.train.use_liger_kernel, device=hardware.device)
        substitutes += [liger_note] if liger_note else []
    if hardware.rehearsal:
        substitutes.append(
            "CPU kernels for the card's CUDA ones (fp16/bf16 matmuls, bitsandbytes NF4): same dtypes, casts, autocast "
            "and loss scaler; speed and the kernels' own rounding are not rehearsed"
        )
        if training and config.train.method == "grpo" and config.grpo.use_vllm != "off" and config.quant.bits is None:
            substitutes.append("vLLM → transformers generation (vLLM needs CUDA)")
    vllm = dequantized = False
    if training and config.train.method == "grpo":
        from tifa_lite.runplan.generation import select_dequantized_generation, select_vllm

        vllm = select_vllm(config.grpo.use_vllm, cuda_available=hardware.device == "cuda", quant_bits=config.quant.bits)
        dequantized = select_dequantized_generation(
            config.grpo.dequantize_for_generation, quant_bits=config.quant.bits, device=hardware.device,
            rehearsal=hardware.rehearsal, vllm=vllm)
    return RunPlan(
        purpose=purpose, hardware=hardware, numerics=numerics, attn_implementation=attention, backend=backend,
        backend_reason=reason, model=model,
        world_size=config.distributed.world_size if training else 1, vllm=vllm,
        dequantized_generation=dequantized, liger_kernel=liger, substitutes=tuple(substitutes),
    )

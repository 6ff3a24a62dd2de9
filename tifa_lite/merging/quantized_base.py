"""The base a QLoRA adapter was trained against: every quantised Linear held as
NF4(W) and dequantised in each forward. ``merge --base-weights dequantized`` adds ΔW
to dequant(NF4(W)) instead of W, so the merged model computes what was trained.

The round trip is bitsandbytes' own ``quantize_4bit``/``dequantize_4bit`` with the
run's quant config (type, double quant, block size 64 as in ``Params4bit``) on W cast to
the dtype the run loaded it in; :func:`load_trained` builds the trained model itself
(4-bit base + adapter, unmerged) for the self-check and the parity report. Which
Linears were quantised is transformers' own rule (``get_keys_to_not_convert``: the
output embedding and tied weights stay 16-bit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tifa_lite.hardware import torch_dtype
from tifa_lite.merging.adapter import AdapterInfo, MergeError

log = logging.getLogger(__name__)

BASE_WEIGHTS = ("original", "dequantized")


@dataclass(frozen=True)
class TrainedQuant:
    """How the run held its base: bitsandbytes 4-bit, in ``dtype`` (load and compute)."""

    quant_type: str = "nf4"
    double_quant: bool = True
    dtype: torch.dtype = torch.float32
    blocksize: int = 64

    def bnb_config(self):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=self.quant_type, bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=self.dtype, bnb_4bit_quant_storage=self.dtype,
        )

    def describe(self) -> str:
        return f"{self.quant_type}{' + double quant' if self.double_quant else ''}, {str(self.dtype).removeprefix('torch.')}"


def trained_quant(info: AdapterInfo) -> TrainedQuant | None:
    """The run's 4-bit config (resolved_config.yaml ``quant``, run_summary.json precision),
    or None when the run did not train on a 4-bit base or does not say."""
    quant = info.recipe_quant
    if quant is None or quant.get("bits") != 4:
        return None
    compute = quant.get("compute_dtype") or "auto"
    precision = info.precision if compute == "auto" else compute
    if precision in (None, "auto"):
        info.notes.append("the run does not record its precision (run_summary.json): NF4 round trip done in fp32")
        precision = "fp32"
    return TrainedQuant(quant_type=quant.get("quant_type", "nf4"), double_quant=bool(quant.get("double_quant", True)),
                        dtype=torch_dtype(precision))


def quantized_linear_names(config: dict[str, Any], loader_class) -> set[str]:
    """Weight names (``….weight``) transformers quantises when loading this config in 4-bit."""
    from transformers import AutoConfig
    from transformers.quantizers.base import get_keys_to_not_convert

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = loader_class.from_config(cfg)
    skip = set(get_keys_to_not_convert(model))
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name not in skip and not any(name.endswith(f".{s}") or name == s for s in skip):
            names.add(f"{name}.weight")
    return names


def nf4_round_trip(weight: torch.Tensor, quant: TrainedQuant) -> torch.Tensor:
    """dequant(NF4(W)) as the trained forward saw it, in fp32."""
    import bitsandbytes.functional as F

    w = weight.to(quant.dtype).contiguous()
    packed, state = F.quantize_4bit(w, blocksize=quant.blocksize, compress_statistics=quant.double_quant,
                                    quant_type=quant.quant_type, quant_storage=quant.dtype)
    return F.dequantize_4bit(packed, state).to(torch.float32)


def choose_base_weights(requested: str, quant: TrainedQuant | None, info: AdapterInfo) -> str:
    """``auto``: into what was trained (dequantized) for a 4-bit run, else the original W."""
    if requested not in ("auto", *BASE_WEIGHTS):
        raise MergeError(f"--base-weights {requested!r}: use original, dequantized or auto.")
    if requested == "dequantized" and quant is None:
        raise MergeError(
            f"--base-weights dequantized: {info.path} does not record a 4-bit base (no resolved_config.yaml with "
            "quant.bits: 4 beside the adapter), so there is no quantised base to merge into. "
            "Use --base-weights original, or merge the run folder that trained the adapter."
        )
    if requested == "auto":
        return "dequantized" if quant is not None else "original"
    return requested


def load_trained(base_path: Path, adapter_dir: Path, quant: TrainedQuant, loader=None, device_map=None):
    """The trained model: the base loaded in 4-bit exactly as the run loaded it, plus the
    adapter unmerged (PEFT). Eval mode, so LoRA dropout is off."""
    from peft import PeftModel

    from tifa_lite.merging.adapter import ModelLoader
    from tifa_lite.modeling.bnb_cpu import training_arithmetic

    loader = loader or ModelLoader.causal_lm()
    kwargs: dict[str, Any] = dict(dtype=quant.dtype, quantization_config=quant.bnb_config(), **loader.kwargs)
    if device_map is not None:
        kwargs["device_map"] = device_map
    base = loader.auto_class.from_pretrained(str(base_path), **kwargs)
    training_arithmetic(base)  # the reference is what training computed
    if loader.head is not None:
        loader.load_head(base, adapter_dir)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()

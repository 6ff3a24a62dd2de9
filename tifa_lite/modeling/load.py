"""Load tokenizer + model the way the recipe says: 4-bit NF4 (QLoRA), 8-bit, or 16/32-bit,
with a PEFT LoRA config for TRL to attach."""

from __future__ import annotations

import logging
from typing import Any

import torch

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.console import stage
from tifa_lite.distributed.runtime import local_rank
from tifa_lite.hardware import Hardware, detect, resolve_precision, supports_bf16, torch_dtype
from tifa_lite.modeling.dtypes import keep_norms_fp32
from tifa_lite.modeling.layer_loop import apply_layer_loop, check_trainable
from tifa_lite.modeling.resolve import ResolvedModel, resolve_model, source_kwargs

log = logging.getLogger(__name__)


def load_tokenizer(config: RecipeConfig, resolved: ResolvedModel | None = None):
    from transformers import AutoTokenizer

    from tifa_lite.conversation.templates import apply_chat_template_choice

    resolved = resolved or resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, **source_kwargs(config.model, resolved))
    if tokenizer.pad_token is None:
        # Padding with EOS is safe because labels of padded positions are masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    apply_chat_template_choice(tokenizer, config.model)
    return tokenizer


def quantization_config(config: RecipeConfig, precision: str):
    bits = config.quant.bits
    if bits is None:
        return None
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = config.quant.compute_dtype
    if compute == "bf16" and precision == "fp16":
        # precision was already downgraded because this GPU has no bf16 (T4): follow it.
        log.warning("quant.compute_dtype=bf16 on a GPU without bf16: computing in fp16.")
        compute = "fp16"
    compute_dtype = torch_dtype(precision if compute == "auto" else compute)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.quant.quant_type,
        bnb_4bit_use_double_quant=config.quant.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=compute_dtype,
    )


def attn_implementation(config: RecipeConfig, hardware: Hardware, precision: str | None = None) -> str | None:
    """``model.attn_implementation: auto`` → FlashAttention-2 only where it runs: a 16-bit
    precision (its kernels take fp16/bf16 only), an Ampere-or-newer GPU not treated as a T4
    (the same test as bf16, :func:`tifa_lite.hardware.supports_bf16`), transformers' own
    availability check, and a ``flash_attn`` that imports (a wheel built for another
    torch/CUDA passes the metadata check and fails at the first forward). Else sdpa."""
    choice = config.model.attn_implementation
    if choice != "auto":
        return choice
    precision = precision or resolve_precision(config.train.precision, hardware)
    if hardware.device == "cuda" and precision in ("bf16", "fp16") and supports_bf16() and flash_attention_2_usable():
        return "flash_attention_2"
    return "sdpa"


def flash_attention_2_usable() -> bool:
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return False
    try:
        import flash_attn  # noqa: F401  (its CUDA extension loads here)
    except Exception as exc:  # an ABI mismatch raises ImportError or OSError
        log.warning("flash_attn is installed but does not import (%s): using sdpa attention.", exc)
        return False
    return True


def load_model(config: RecipeConfig, precision: str, hardware: Hardware, resolved: ResolvedModel | None = None):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    resolved = resolved or resolve_model(config.model)
    auto_cls = AutoModelForSequenceClassification if config.train.method == "reward" else AutoModelForCausalLM
    kwargs: dict[str, Any] = dict(
        **source_kwargs(config.model, resolved),
        dtype=torch_dtype(precision),
        attn_implementation=attn_implementation(config, hardware, precision),
    )
    if config.train.method == "reward":
        kwargs["num_labels"] = 1
    quant = quantization_config(config, precision)
    if quant is not None:
        kwargs["quantization_config"] = quant
        if hardware.device == "cuda":
            # Under a launcher each rank owns its node's GPU number LOCAL_RANK; a 4-bit model
            # cannot be moved after loading, so it must be quantised onto that GPU.
            kwargs["device_map"] = {"": local_rank()}
    model = auto_cls.from_pretrained(resolved.path, **kwargs)
    apply_layer_loop(model, config.model.layer_loop)  # before PEFT attaches: it must see every pass
    model.config.use_cache = False
    # DeepSpeed ZeRO-3 gathers parameters into buffers of one dtype: mixed dtypes break it.
    if precision == "fp16" and config.lora.enabled and not config.distributed.deepspeed:
        keep_norms_fp32(model)
    # Recorded so merge/export can find the exact base again.
    model.config.tifa_lite_base = resolved.origin
    return model


def lora_config(config: RecipeConfig):
    if not config.lora.enabled:
        return None
    from peft import LoraConfig

    lo = config.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=lo.target_modules,
        use_dora=lo.use_dora,
        use_rslora=lo.use_rslora,
        bias=lo.bias,
        modules_to_save=lo.modules_to_save,
        task_type="SEQ_CLS" if config.train.method == "reward" else "CAUSAL_LM",
    )


def load_for_training(config: RecipeConfig, precision: str | None = None, hardware: Hardware | None = None):
    """Returns ``(model, tokenizer, peft_config)``; TRL's trainer attaches the adapter."""
    hardware = hardware or detect()
    precision = precision or resolve_precision(config.train.precision, hardware)
    check_trainable(config)
    resolved = resolve_model(config.model)
    stage("model resolved: %s → %s", resolved.origin, resolved.path)
    tokenizer = load_tokenizer(config, resolved)
    model = load_model(config, precision, hardware, resolved)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, lora_config(config)

"""Load tokenizer + model the way the run plan says: 4-bit NF4 (QLoRA), 8-bit, or 16/32-bit,
with a PEFT LoRA config for TRL to attach. Every dtype, the attention kernel and the model's
source come from :class:`tifa_lite.runplan.RunPlan`; nothing here decides them again."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.console import stage
from tifa_lite.distributed.runtime import local_rank
from tifa_lite.hardware import torch_dtype
from tifa_lite.hub import refused_by_hub
from tifa_lite.modeling.dtypes import cast_head_inputs, keep_norms_fp32
from tifa_lite.modeling.layer_loop import apply_layer_loop, check_trainable
from tifa_lite.modeling.resolve import ResolvedModel, loadable_path, source_kwargs

if TYPE_CHECKING:
    from tifa_lite.runplan import RunPlan

log = logging.getLogger(__name__)


def load_tokenizer(config: RecipeConfig, resolved: ResolvedModel):
    from transformers import AutoTokenizer

    from tifa_lite.conversation.templates import apply_chat_template_choice

    try:
        tokenizer = AutoTokenizer.from_pretrained(loadable_path(config.model, resolved), **source_kwargs(config.model, resolved))
    except OSError as exc:  # the first read of a hub id: a misspelt or gated one is refused here
        refused = refused_by_hub(resolved.path, exc) if resolved.origin.startswith("hf:") else None
        if refused is None:
            raise
        raise refused from None
    if tokenizer.pad_token is None:
        # Padding with EOS is safe because labels of padded positions are masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    apply_chat_template_choice(tokenizer, config.model)
    return tokenizer


def quantization_config(config: RecipeConfig, plan: "RunPlan"):
    bits = config.quant.bits
    if bits is None:
        return None
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = plan.numerics.quant_compute_dtype
    if config.quant.compute_dtype not in ("auto", compute):
        log.warning("quant.compute_dtype=%s on a card without it: computing in %s.", config.quant.compute_dtype, compute)
    compute_dtype = torch_dtype(compute)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.quant.quant_type,
        bnb_4bit_use_double_quant=config.quant.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=compute_dtype,
    )


def load_model(config: RecipeConfig, plan: "RunPlan"):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from tifa_lite.modeling.bnb_cpu import keep_narrow_layers_unpacked

    resolved = plan.model
    auto_cls = AutoModelForSequenceClassification if config.train.method == "reward" else AutoModelForCausalLM
    n = plan.numerics
    kwargs: dict[str, Any] = dict(
        **source_kwargs(config.model, resolved),
        dtype=torch_dtype(n.weight_dtype),
        attn_implementation=plan.attn_implementation,
    )
    if config.train.method == "reward":
        kwargs["num_labels"] = 1
    quant = quantization_config(config, plan)
    if quant is not None:
        kwargs["quantization_config"] = quant
        if plan.device == "cuda":
            # Under a launcher each rank owns its node's GPU number LOCAL_RANK; a 4-bit model
            # cannot be moved after loading, so it must be quantised onto that GPU.
            kwargs["device_map"] = {"": local_rank()}
    model = auto_cls.from_pretrained(loadable_path(config.model, resolved), **kwargs)
    keep_narrow_layers_unpacked(model)
    apply_layer_loop(model, config.model.layer_loop)  # before PEFT attaches: it must see every pass
    model.config.use_cache = False
    if n.norm_dtype == "fp32":
        keep_norms_fp32(model)
        cast_head_inputs(model)
    # Recorded so merge/export can find the exact base again.
    model.config.tifa_lite_base = resolved.origin
    return model


def fused_expert_weights(model) -> bool:
    """Whether the model keeps its MoE experts as stacked 3-D weights (transformers 5's Qwen3-MoE,
    GPT-OSS, DeepSeek-V3, Qwen3-Next): PEFT's ``all-linear`` then adapts them as parameters
    (``target_parameters``, its ParamWrapper), which takes no dropout."""
    return any(param.ndim == 3 for param in model.parameters())


def lora_config(config: RecipeConfig, model=None):
    if not config.lora.enabled:
        return None
    from peft import LoraConfig

    lo = config.lora
    dropout = lo.dropout
    if dropout and lo.target_modules == "all-linear" and model is not None and fused_expert_weights(model):
        from tifa_lite.modeling.lever_check import family

        log.warning("lora.dropout %s → 0 for %s: PEFT adapts its fused MoE expert weights as parameters, which "
                    "take no dropout (set lora.dropout=0 to silence this)", dropout, family(model))
        dropout = 0.0
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=dropout,
        target_modules=lo.target_modules,
        use_dora=lo.use_dora,
        use_rslora=lo.use_rslora,
        bias=lo.bias,
        modules_to_save=lo.modules_to_save,
        task_type="SEQ_CLS" if config.train.method == "reward" else "CAUSAL_LM",
    )


def load_for_training(config: RecipeConfig, plan: "RunPlan | None" = None):
    """Returns ``(model, tokenizer, peft_config)``; TRL's trainer attaches the adapter.
    Without a plan (a caller outside a run) one is resolved here."""
    if plan is None:
        from tifa_lite.runplan import resolve_plan

        plan = resolve_plan(config)
    check_trainable(config)
    resolved = plan.model
    stage("model resolved: %s → %s", resolved.origin, resolved.path)
    tokenizer = load_tokenizer(config, resolved)
    model = load_model(config, plan)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, lora_config(config, model)

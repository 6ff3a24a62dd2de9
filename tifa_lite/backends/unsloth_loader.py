"""Load a recipe's model through unsloth's FastLanguageModel (CUDA only).

The recipe is mapped 1:1 onto unsloth's two calls (API of unsloth 2024.x–2026.x,
``unsloth/models/loader.py`` and ``unsloth/models/llama.py``)::

    FastLanguageModel.from_pretrained(model_name, max_seq_length, dtype, load_in_4bit, …)
    FastLanguageModel.get_peft_model(model, r, lora_alpha, lora_dropout, target_modules,
                                     bias, use_gradient_checkpointing, random_state,
                                     use_rslora, modules_to_save, max_seq_length)

unsloth returns the model already wrapped as a PeftModel, so the peft_config handed to
TRL is None (TRL would otherwise wrap it a second time).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.hardware import torch_dtype
from tifa_lite.modeling.resolve import ResolvedModel

log = logging.getLogger(__name__)


def compute_dtype(config: RecipeConfig, precision: str) -> torch.dtype:
    compute = config.quant.compute_dtype
    return torch_dtype(precision if compute == "auto" else compute)


def from_pretrained_kwargs(config: RecipeConfig, resolved: ResolvedModel, precision: str) -> dict[str, Any]:
    return dict(
        model_name=resolved.path,
        max_seq_length=config.data.max_length,
        dtype=compute_dtype(config, precision),
        load_in_4bit=config.quant.bits == 4,
        revision=config.model.revision,
        trust_remote_code=config.model.trust_remote_code,
    )


def linear_leaf_names(model) -> list[str]:
    """PEFT's ``all-linear`` rule (every Linear layer except the output head), reduced to
    leaf names: unsloth's fast path matches target modules by leaf name and iterates the
    value, so the string "all-linear" cannot be passed through."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def get_peft_model_kwargs(config: RecipeConfig, model) -> dict[str, Any]:
    lo = config.lora
    targets = linear_leaf_names(model) if lo.target_modules == "all-linear" else list(lo.target_modules)
    return dict(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=targets,
        bias=lo.bias,
        # unsloth's own checkpointing offloads activations to CPU RAM: the same
        # recompute-in-backward as the recipe's setting, with less VRAM.
        use_gradient_checkpointing="unsloth" if config.train.gradient_checkpointing else False,
        random_state=config.train.seed,
        use_rslora=lo.use_rslora,
        modules_to_save=list(lo.modules_to_save) if lo.modules_to_save else None,
        max_seq_length=config.data.max_length,
    )


def load_with_unsloth(config: RecipeConfig, plan):
    """Returns ``(peft_model, tokenizer, None)``, like ``modeling.load_for_training``; the
    model source and precision are the run plan's."""
    from unsloth import FastLanguageModel  # optional, CUDA-only: imported only when chosen

    from tifa_lite.conversation.templates import apply_chat_template_choice

    resolved = plan.model
    model, tokenizer = FastLanguageModel.from_pretrained(**from_pretrained_kwargs(config, resolved, plan.precision))
    peft_kwargs = get_peft_model_kwargs(config, model)
    model = FastLanguageModel.get_peft_model(model, **peft_kwargs)

    if tokenizer.pad_token is None:
        # Same rule as the transformers path: padded positions are masked out of the loss.
        tokenizer.pad_token = tokenizer.eos_token
    apply_chat_template_choice(tokenizer, config.model)
    base_config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    if getattr(base_config, "pad_token_id", None) is None:
        base_config.pad_token_id = tokenizer.pad_token_id
    base_config.use_cache = False
    base_config.tifa_lite_base = resolved.origin
    # Methods read this to leave gradient checkpointing to unsloth (already applied above)
    # instead of asking transformers to enable its own on top.
    model.tifa_lite_backend = "unsloth"
    log.info(
        "backend: unsloth on %s (r=%d, targets=%s, checkpointing=%s)",
        plan.hardware.gpu_name, peft_kwargs["r"], ",".join(peft_kwargs["target_modules"]),
        peft_kwargs["use_gradient_checkpointing"],
    )
    return model, tokenizer, None

"""The model zoo: tiny random models of the families users fine-tune, built from each family's
own config class with the traits that matter to the kit kept as shipped upstream (sliding
windows with and without ``layer_types``, MoE router logits, linear-attention layers, fused
projections, MLA, attention sinks, soft-capping, NoPE layers), and everything else shrunk.

A model's code paths, dtypes and memory terms do not depend on its weights' values, so a
random model of a family's config exercises what a real one does, with no download. Each
member is saved as a local HF folder next to a real tokenizer (the embedded SmolLM2's), so
it goes through the kit's normal loading path: ``train(recipe, model.name_or_path=folder)``.
Tests (``tests/conftest.py``'s ``zoo_model_dir``) and benchmarks use it alike.

Written here because no library ships tiny configs of these families in one place: the
upstream test suites build theirs inside their own test classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Small enough for a CPU step in well under a second, big enough that windows bite: the
# zoo's windows are shorter than the shortest prompt the tests build.
WINDOW = 8
_COMMON = dict(initializer_range=0.1, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=2048)


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str  # the transformers config's model_type (AutoConfig.for_model)
    traits: str  # what this member is in the zoo for
    config: dict = field(default_factory=dict)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama", "llama", "control: dense, full attention", dict(tie_word_embeddings=True)),
    Family("qwen2", "qwen2", "dense, qkv bias, untied head"),
    Family("qwen3", "qwen3", "q/k norms", dict(head_dim=16)),
    Family("qwen3_moe", "qwen3_moe", "MoE, router logits on (load-balancing loss in every forward)",
           dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1,
                output_router_logits=True, router_aux_loss_coef=0.001, head_dim=16)),
    Family("qwen3_next", "qwen3_next", "hybrid: gated delta-net linear attention + full attention, MoE",
           dict(layer_types=["linear_attention", "full_attention"], head_dim=16, linear_num_key_heads=2,
                linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_conv_kernel_dim=4,
                num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
                decoder_sparse_step=1, output_router_logits=False)),
    Family("qwen3_5", "qwen3_5_text", "hybrid: linear attention + full attention (Qwen3.5)",
           dict(layer_types=["linear_attention", "full_attention"], head_dim=16, linear_num_key_heads=2,
                linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16,
                linear_conv_kernel_dim=4)),
    Family("mistral", "mistral", "sliding window from config.sliding_window, no layer_types (Mistral-7B-v0.1)",
           dict(sliding_window=WINDOW, head_dim=16)),
    Family("phi3", "phi3", "fused qkv and gate_up projections, sliding window, no layer_types (Phi-3-mini-4k)",
           dict(sliding_window=WINDOW, pad_token_id=None)),
    Family("gemma3", "gemma3_text", "sliding + global layers, final-logit soft-capping, scaled embeddings",
           dict(layer_types=["sliding_attention", "full_attention"], sliding_window=WINDOW, head_dim=16,
                final_logit_softcapping=30.0, query_pre_attn_scalar=16)),
    Family("glm4", "glm4", "partial rotary, post-sublayer norms, fused gate_up", dict(head_dim=16)),
    Family("gpt_oss", "gpt_oss", "MoE with attention sinks, sliding + full layers",
           dict(layer_types=["sliding_attention", "full_attention"], sliding_window=WINDOW, head_dim=16,
                num_local_experts=4, num_experts_per_tok=2, output_router_logits=False,
                # YaRN's factor is read against these two; the family's own pair keeps them consistent
                max_position_embeddings=131072)),
    Family("deepseek_v3", "deepseek_v3", "MLA attention, shared + routed experts, a dense first layer",
           dict(n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32, n_group=1,
                topk_group=1, first_k_dense_replace=1, q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8,
                qk_nope_head_dim=8, v_head_dim=16, head_dim=8, num_key_value_heads=4)),  # MLA: one kv head per head, as shipped
    Family("smollm3", "smollm3", "NoPE layers (no rotary in every fourth layer)",
           dict(no_rope_layer_interval=2, head_dim=16)),
)}


def missing_reason(family: str) -> str | None:
    """Why this transformers cannot build the family (None: it can)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = FAMILIES[family].model_type
    if model_type not in CONFIG_MAPPING_NAMES:
        import transformers

        return f"transformers {transformers.__version__} has no '{model_type}' model ({family})"
    return None


def zoo_config(family: str, vocab_size: int, special_tokens: dict | None = None):
    """The family's config class with the zoo's tiny shapes."""
    from transformers import AutoConfig

    member = FAMILIES[family]
    kwargs = {**_COMMON, **(special_tokens or {}), **member.config, "vocab_size": vocab_size}
    return AutoConfig.for_model(member.model_type, **kwargs)


def build_zoo_model(family: str, folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Write the family's tiny random model and the tokenizer of ``tokenizer_dir`` to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reason = missing_reason(family)
    if reason:
        raise ValueError(reason)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    config = zoo_config(family, len(tokenizer), special)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""The planner's table of published model configs and their aliases, and the embedded model's
name: plain data, no imports from the kit, so the hub checks (:mod:`tifa_lite.hub`) and the
shape reader (:mod:`tifa_lite.planner.shapes`) both read it without importing each other."""

from __future__ import annotations

from typing import Any


def _cfg(h, i, layers, heads, kv, vocab, tied, qkv_bias=False, head_dim=None, model_type="llama"):
    return {
        "hidden_size": h, "intermediate_size": i, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "tie_word_embeddings": tied, "attention_bias": qkv_bias,
        "head_dim": head_dim or h // heads, "model_type": model_type,
    }


# Published config.json values (Hugging Face Hub model cards' config files).
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": _cfg(576, 1536, 30, 9, 3, 49152, True),
    "HuggingFaceTB/SmolLM2-360M-Instruct": _cfg(960, 2560, 32, 15, 5, 49152, True),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": _cfg(2048, 8192, 24, 32, 32, 49152, True),
    "Qwen/Qwen2.5-0.5B-Instruct": _cfg(896, 4864, 24, 14, 2, 151936, True, True, model_type="qwen2"),
    "Qwen/Qwen2.5-1.5B-Instruct": _cfg(1536, 8960, 28, 12, 2, 151936, True, True, model_type="qwen2"),
    "Qwen/Qwen2.5-3B-Instruct": _cfg(2048, 11008, 36, 16, 2, 151936, True, True, model_type="qwen2"),
    "Qwen/Qwen2.5-7B-Instruct": _cfg(3584, 18944, 28, 28, 4, 152064, False, True, model_type="qwen2"),
    "Qwen/Qwen2.5-14B-Instruct": _cfg(5120, 13824, 48, 40, 8, 152064, False, True, model_type="qwen2"),
    "Qwen/Qwen2-7B-Instruct": _cfg(3584, 18944, 28, 28, 4, 152064, False, True, model_type="qwen2"),
    "meta-llama/Llama-2-7b-hf": _cfg(4096, 11008, 32, 32, 32, 32000, False),
    "meta-llama/Llama-3.1-8B-Instruct": _cfg(4096, 14336, 32, 32, 8, 128256, False),
    "meta-llama/Llama-3.2-1B-Instruct": _cfg(2048, 8192, 16, 32, 8, 128256, True, head_dim=64),
    "meta-llama/Llama-3.2-3B-Instruct": _cfg(3072, 8192, 28, 24, 8, 128256, True, head_dim=128),
    "mistralai/Mistral-7B-v0.1": _cfg(4096, 14336, 32, 32, 8, 32000, False),
}
# Base / instruct / alias spellings share a shape.
_ALIASES = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-135M": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "Qwen/Qwen2.5-0.5B": "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B": "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-3B": "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-7B": "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-14B": "Qwen/Qwen2.5-14B-Instruct",
    "Qwen/Qwen2-7B": "Qwen/Qwen2-7B-Instruct",
    "meta-llama/Llama-2-7b-chat-hf": "meta-llama/Llama-2-7b-hf",
    "meta-llama/Llama-3.1-8B": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Meta-Llama-3-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.2-1B": "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B": "meta-llama/Llama-3.2-3B-Instruct",
}


# Mirrors tifa_lite.modeling.embedded (EMBEDDED_MODELS, cache_root): importing that package
# imports torch, which `plan` must not need.
EMBEDDED = ("smollm2-135m-instruct",)

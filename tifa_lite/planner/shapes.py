"""The model's shape from its config alone: no weights are read, and ``plan`` works offline.

Local folders (and the embedded model once converted) are read from their ``config.json``
with the json module, so planning never imports torch. Hub ids are looked up in a small
bundled table of well-known configs first (offline), then in the local HF cache, and
only then through ``transformers.AutoConfig`` (which may use the network).

Bundled numbers are copied from each model's published ``config.json`` on the Hugging
Face Hub (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
num_key_value_heads, vocab_size, tie_word_embeddings, attention bias).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError
from tifa_lite.planner.known_models import _ALIASES, EMBEDDED, KNOWN_CONFIGS  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int
    qkv_bias: bool = False
    source: str = ""
    checkpoint_dtype: str = "bf16"  # dtype the weights are stored in (config.json torch_dtype / dtype)
    # What differs between the dense families (tifa_lite.modeling.zoo builds one of each):
    fused_qkv: bool = False  # one qkv_proj (Phi-3)
    fused_gate_up: bool = False  # one gate_up_proj (Phi-3, GLM-4)
    norms_per_layer: int = 2  # Gemma 2/3 and GLM-4 also normalise each sublayer's output
    qk_norm: bool = False  # RMSNorm on q and k per head (Qwen3, Gemma 3)
    norm_returns_input_dtype: bool = False  # Gemma's RMSNorm: output.type_as(x), whatever its weight's dtype
    sliding_window: int | None = None  # tokens a sliding-window layer sees
    sliding_layers: int = 0  # how many layers use it

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of every linear layer in one decoder block, by its HF module name."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        attn = {"qkv_proj": (h, q + 2 * kv)} if self.fused_qkv else {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv)}
        mlp = {"gate_up_proj": (h, 2 * i)} if self.fused_gate_up else {"gate_proj": (h, i), "up_proj": (h, i)}
        return {**attn, "o_proj": (q, h), **mlp, "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        per_layer = sum(a * b for a, b in self.linear_shapes().values())
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        return self.layers * (per_layer + bias)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def norm_params(self) -> int:
        return self.layers * (self.norms_per_layer * self.hidden + (2 * self.head_dim if self.qk_norm else 0)) + self.hidden

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.head_params + self.norm_params

    @property
    def largest_layer_params(self) -> int:
        return max(self.linear_params // self.layers, self.embedding_params)


# Per model_type, what the dense families do differently (their modeling_*.py in transformers).
_FUSED_QKV = {"phi3"}
_FUSED_GATE_UP = {"phi3", "glm4"}
_FOUR_NORMS = {"gemma2", "gemma3", "gemma3_text", "glm4"}
_QK_NORM = {"qwen3", "gemma3", "gemma3_text"}
_GEMMA_NORM = {"gemma", "gemma2", "gemma3", "gemma3_text"}


def unplannable(cfg: dict[str, Any]) -> str | None:
    """Why the planner's dense-decoder arithmetic does not describe this config (None: it does)."""
    experts = next((cfg[k] for k in ("num_experts", "num_local_experts", "n_routed_experts") if cfg.get(k)), None)
    if experts:
        return (f"mixture of experts ({experts} experts): its expert weights are 3-D tensors that bitsandbytes leaves "
                "unquantised and PEFT adapts per expert, and the tokens each expert keeps depend on the routing")
    if cfg.get("kv_lora_rank"):
        return "multi-head latent attention (kv_lora_rank): its cache and projections are not q/k/v heads"
    if "linear_attention" in (cfg.get("layer_types") or []):
        return "linear-attention layers (layer_types): their recurrent state and convolution are not attention heads"
    return None


def _sliding(cfg: dict[str, Any]) -> dict[str, Any]:
    """Sliding-window layers: named in layer_types (Gemma 3), else every layer where the family applies
    config.sliding_window (Mistral, Phi-3; Qwen2 only with use_sliding_window)."""
    window = cfg.get("sliding_window")
    if not window:
        return {}
    types = cfg.get("layer_types")
    if types:
        count = sum(t == "sliding_attention" for t in types)
    elif cfg.get("model_type") in ("mistral", "phi3") or cfg.get("use_sliding_window"):
        count = int(cfg["num_hidden_layers"])
    else:
        count = 0
    return {"sliding_window": int(window), "sliding_layers": count} if count else {}


def model_shape_from_config_dict(cfg: dict[str, Any], name: str = "", source: str = "") -> ModelShape:
    cfg = cfg.get("text_config", cfg) if "hidden_size" not in cfg else cfg
    reason = unplannable(cfg)
    if reason:
        raise ConfigError(
            f"the memory planner cannot plan {name or cfg.get('model_type', 'this model')} "
            f"({cfg.get('model_type')}): {reason}. Plan a dense model of the same size instead; train.auto_fit "
            "trains such a model as written."
        )
    model_type = cfg.get("model_type")
    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        shape = ModelShape(
            name=name or cfg.get("_name_or_path", "") or cfg.get("model_type", "model"),
            hidden=hidden,
            intermediate=int(cfg["intermediate_size"]),
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            vocab=int(cfg["vocab_size"]),
            tied=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            qkv_bias=bool(cfg.get("attention_bias", False)) or cfg.get("model_type") in ("qwen2",),
            source=source,
            checkpoint_dtype=_DTYPES.get(str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"), "bf16"),
            fused_qkv=model_type in _FUSED_QKV,
            fused_gate_up=model_type in _FUSED_GATE_UP,
            norms_per_layer=4 if model_type in _FOUR_NORMS else 2,
            qk_norm=model_type in _QK_NORM,
            norm_returns_input_dtype=model_type in _GEMMA_NORM,
            **_sliding(cfg),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"model config of {name or 'the model'} lacks {exc} : the planner reads decoder-only transformer "
            "configs (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size)."
        ) from None
    return shape


_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "torch.float32": "fp32",
           "torch.bfloat16": "bf16", "torch.float16": "fp16"}




def _lookup(name: str) -> str | None:
    folded = {k.lower(): k for k in [*KNOWN_CONFIGS, *_ALIASES]}
    key = folded.get(name.lower())
    if key is None:
        # ModelScope ids mirror the hub ones (qwen/Qwen2.5-7B-Instruct → Qwen/Qwen2.5-7B-Instruct).
        tail = name.split("/")[-1].lower()
        matches = [k for k in folded if k.split("/")[-1] == tail]
        key = folded[matches[0]] if len(matches) == 1 else None
    return _ALIASES.get(key, key) if key else None


def known_shape(name: str) -> ModelShape:
    key = _lookup(name)
    if key is None:
        raise ConfigError(f"no bundled config for {name!r}; known: {', '.join(KNOWN_CONFIGS)}")
    return model_shape_from_config_dict(KNOWN_CONFIGS[key], name=key, source="bundled table (published config.json)")


def read_model_shape(model_cfg) -> ModelShape:
    """``model_cfg`` is the recipe's ``model:`` section. Reads config.json only, never weights."""
    name = model_cfg.name_or_path
    if model_cfg.source in ("auto", "embedded") and name.lower() in EMBEDDED:
        converted = _embedded_cache_root() / name.lower() / "config.json"
        if converted.is_file():
            return _from_file(converted, name)
        return known_shape(name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf" or model_cfg.gguf_file:
        raise ConfigError(
            f"model.name_or_path={name}: planning a GGUF base needs its HF config; give the HF id of the same model."
        )
    if (path / "config.json").is_file():
        return _from_file(path / "config.json", name)
    if _lookup(name):
        return known_shape(name)
    return _from_hub(name, model_cfg)




def _embedded_cache_root() -> Path:
    root = os.environ.get("TIFA_LITE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tifa_lite"
    return Path(root)


def _from_file(path: Path, name: str) -> ModelShape:
    return model_shape_from_config_dict(json.loads(path.read_text(encoding="utf-8")), name=name, source=str(path))


def _from_hub(name: str, model_cfg) -> ModelShape:
    from tifa_lite.hub import hf_cache_dir, hf_status, unreachable_error

    why = hf_status()
    if why is not None:  # the cached config.json, else one line at once rather than a minute of retries
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name, "config.json", revision=model_cfg.revision, cache_dir=hf_cache_dir())
        except ValueError:  # not a valid repo id
            cached = None
        if isinstance(cached, str):
            return _from_file(Path(cached), name)
        raise unreachable_error("model.name_or_path", name, "Hugging Face Hub", why)
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(
            name, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        ).to_dict()
    except Exception as exc:  # offline, gated, or not a model id
        from tifa_lite.hub import close_matches

        matches = close_matches(name)
        hint = f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"model.name_or_path={name}: could not read its config ({type(exc).__name__}: {first}).{hint} "
            f"Planning offline works for local folders and these bundled ids: {', '.join(KNOWN_CONFIGS)}."
        ) from None
    return model_shape_from_config_dict(cfg, name=name, source=f"AutoConfig({name})")

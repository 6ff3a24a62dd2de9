"""What a merge starts from: the adapter folder (weights, PEFT config, the recipe that
trained it) and the base it belongs to, checked against each other before anything
is written."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError, TifaError

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# PEFT saves LoRA tensors as base_model.model.<module>.<part>; the adapter name is stripped.
_KEY_RE = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$")


class MergeError(TifaError):
    """The merge cannot be done, or its self-check failed; nothing was written."""


@dataclass
class AdapterInfo:
    path: Path
    peft_config: Any  # peft.LoraConfig
    # module name (as in the base state dict, without ".weight") → {"lora_A": t, "lora_B": t, ...}
    modules: dict[str, dict[str, Any]]
    # adapter keys that are not plain LoRA A/B/magnitude (modules_to_save, trainable tokens, …)
    other_keys: list[str]
    other_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    recipe_model: Any = None  # tifa_lite ModelConfig from resolved_config.yaml, when present
    sampling: dict[str, Any] | None = None
    recipe_quant: dict[str, Any] | None = None  # resolved_config.yaml ``quant``: how the base was held in training
    precision: str | None = None  # run_summary.json: the precision the run resolved
    notes: list[str] = field(default_factory=list)


def _base_model_type(peft_config) -> str:
    """The base's model_type from its config.json where the adapter's base path is local."""
    import json

    base = Path(str(getattr(peft_config, "base_model_name_or_path", "") or ""))
    try:
        return json.loads((base / "config.json").read_text())["model_type"]
    except (OSError, ValueError, KeyError):
        return str(base) or "its base"


def read_adapter(path: str | Path) -> AdapterInfo:
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"--adapter {path}: the folder does not exist.")
    if not (path / "adapter_config.json").is_file():
        hint = ""
        if (path / "config.json").is_file():
            hint = " It holds a full model (config.json): there is nothing to merge."
        elif path.is_dir() and any(path.glob("checkpoint-*")):
            hint = " Point --adapter at a finished run or at one of its checkpoint-* folders."
        raise ConfigError(f"--adapter {path}: no adapter_config.json, so this is not a PEFT adapter folder.{hint}")
    from peft import PeftConfig

    from tifa_lite.verify import check_weights_folder

    check_weights_folder(path, torch_files=True)
    peft_config = PeftConfig.from_pretrained(str(path))
    if getattr(peft_config, "peft_type", None) is None or str(peft_config.peft_type.value) != "LORA":
        raise ConfigError(f"{path}/adapter_config.json: peft_type={peft_config.peft_type}; only LoRA adapters are merged.")
    if getattr(peft_config, "target_parameters", None):
        # PEFT's ParamWrapper: LoRA on stacked 3-D MoE expert weights (what all-linear becomes on
        # transformers 5's fused-expert models), which the per-layer merge below does not compose
        model_type = _base_model_type(peft_config)
        raise ConfigError(
            f"{path}/adapter_config.json: the adapter adapts fused MoE expert weights of {model_type} as parameters "
            f"(target_parameters: {', '.join(sorted(peft_config.target_parameters))}), which this merge does not "
            "handle. Serve the adapter unmerged (tifa-lite serve/chat --adapter), or train with lora.target_modules "
            "naming the attention and dense projections, e.g. [q_proj, k_proj, v_proj, o_proj].")

    tensors = _load_adapter_tensors(path)
    modules: dict[str, dict[str, Any]] = {}
    other: list[str] = []
    for key, tensor in tensors.items():
        m = _KEY_RE.match(key)
        if m is None:
            other.append(key)
            continue
        part = m.group("part").split(".")[0]
        modules.setdefault(m.group("module"), {})[part] = tensor
    incomplete = [name for name, parts in modules.items() if not {"lora_A", "lora_B"} <= parts.keys()]
    if incomplete:
        raise MergeError(f"{path}: adapter weights incomplete (lora_A or lora_B missing) for {incomplete[:3]}.")

    info = AdapterInfo(path=path, peft_config=peft_config, modules=modules, other_keys=sorted(other),
                       other_shapes={k: tuple(tensors[k].shape) for k in other})
    _read_run_files(info)
    return info


_HEAD_RE = re.compile(r"^base_model\.model\.(?P<head>score|classifier)\.weight$")


@dataclass(frozen=True)
class ModelLoader:
    """The transformers class an adapter's model is built from. A sequence-classification
    (reward) adapter (``task_type: SEQ_CLS``) belongs to ``AutoModelForSequenceClassification``,
    whose ``score`` head PEFT trains in full and saves as a plain weight in the adapter file:
    loaded as a causal LM, that head is silently dropped."""

    head: str | None = None  # "score" / "classifier" for a sequence classifier
    num_labels: int = 1

    @classmethod
    def causal_lm(cls) -> "ModelLoader":
        return cls()

    @classmethod
    def for_adapter(cls, info: AdapterInfo) -> "ModelLoader":
        if getattr(info.peft_config, "task_type", None) != "SEQ_CLS":
            return cls()
        for key in info.other_keys:
            m = _HEAD_RE.match(key)
            if m:
                return cls(head=m.group("head"), num_labels=info.other_shapes[key][0])
        raise MergeError(
            f"{info.path}: a sequence-classification (reward) adapter without its head weights "
            "(no base_model.model.score.weight): the merged model would score with a random head. "
            "Use the adapter folder the reward run wrote."
        )

    @property
    def auto_class(self):
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        return AutoModelForSequenceClassification if self.head else AutoModelForCausalLM

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"num_labels": self.num_labels} if self.head else {}

    def load_head(self, model, adapter_dir: Path) -> None:
        """Copy the adapter's trained head into ``model`` (a base loaded with a fresh head)."""
        import torch

        prefix = f"base_model.model.{self.head}."
        weights = {k[len(prefix):]: v for k, v in _load_adapter_tensors(Path(adapter_dir)).items() if k.startswith(prefix)}
        head = model.get_submodule(self.head)
        target = next(head.parameters())
        with torch.no_grad():
            head.load_state_dict({k: v.to(device=target.device, dtype=target.dtype) for k, v in weights.items()})


def _load_adapter_tensors(path: Path) -> dict[str, Any]:
    for name in ADAPTER_WEIGHTS:
        file = path / name
        if not file.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(file))
        import torch

        return torch.load(str(file), map_location="cpu", weights_only=True)
    raise ConfigError(f"{path}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}).")


def _read_run_files(info: AdapterInfo) -> None:
    """resolved_config.yaml (our training runs write it beside the adapter) names the
    base and the chat template; tifa_sampling.json the recommended sampling."""
    run_dir = info.path
    if info.path.name.startswith("checkpoint-") and not (info.path / "resolved_config.yaml").is_file():
        run_dir = info.path.parent  # a Trainer checkpoint inside a (possibly unfinished) run folder
    run_config = run_dir / "resolved_config.yaml"
    if run_config.is_file():
        import yaml

        from tifa_lite.config.schema import ModelConfig, SamplingConfig

        data = yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}
        try:
            info.recipe_model = ModelConfig(**(data.get("model") or {}))
            info.recipe_quant = dict(data.get("quant") or {})
            info.sampling = SamplingConfig(**(data.get("sampling") or {})).model_dump()
        except Exception as exc:  # an older/newer schema: fall back to adapter_config.json
            info.notes.append(f"{run_config.name} not readable with this version ({exc}); used adapter_config.json")
    info.precision = read_precision(run_dir)
    sampling_file = run_dir / "tifa_sampling.json"
    if sampling_file.is_file():
        info.sampling = json.loads(sampling_file.read_text(encoding="utf-8"))


def read_precision(run_dir: Path) -> str | None:
    """The precision the run trained in (its run_summary.json), for a merge into what it trained."""
    summary = run_dir / "run_summary.json"
    if summary.is_file():
        return json.loads(summary.read_text(encoding="utf-8")).get("precision")
    return None


@dataclass
class BaseModelRef:
    path: Path  # local folder
    origin: str
    gguf_file: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


def resolve_base(info: AdapterInfo, base: str | None = None) -> BaseModelRef:
    """--base, else the recipe's model, else adapter_config.json's base_model_name_or_path."""
    from tifa_lite.config.schema import ModelConfig
    from tifa_lite.modeling.resolve import resolve_model

    if base:
        model_cfg, where = ModelConfig(name_or_path=str(base)), "--base"
    elif info.recipe_model is not None:
        model_cfg, where = info.recipe_model, f"{info.path}/resolved_config.yaml model.name_or_path"
    else:
        recorded = info.peft_config.base_model_name_or_path
        if not recorded:
            raise ConfigError(f"{info.path}: the adapter does not record its base model; pass --base PATH.")
        model_cfg, where = ModelConfig(name_or_path=recorded), f"{info.path}/adapter_config.json base_model_name_or_path"
    try:
        resolved = resolve_model(model_cfg)
    except TifaError as exc:
        raise ConfigError(f"base model from {where}: {exc} Pass --base PATH to choose it.") from None
    path = Path(resolved.path)
    if not path.exists():
        path = _download(resolved.path, model_cfg.revision)
    config_file = path / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    if base:
        _compare_with_recorded(info, config, str(base))
    return BaseModelRef(path=path, origin=resolved.origin, gguf_file=resolved.gguf_file, config=config)


_SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")


def _compare_with_recorded(info: AdapterInfo, config: dict[str, Any], base: str) -> None:
    """--base against the base the adapter records, when that one is on disk: a base of
    another family can share every LoRA shape (Llama vs Mistral), so compare configs too."""
    from tifa_lite.config.schema import ModelConfig
    from tifa_lite.modeling.resolve import resolve_model

    recorded = info.recipe_model or (
        ModelConfig(name_or_path=info.peft_config.base_model_name_or_path) if info.peft_config.base_model_name_or_path else None
    )
    try:
        path = Path(resolve_model(recorded).path) if recorded is not None else None
    except TifaError:
        return
    if path is None or not (path / "config.json").is_file():
        return
    theirs = json.loads((path / "config.json").read_text(encoding="utf-8"))
    diffs = [f"{k}: {theirs.get(k)} vs {config.get(k)}" for k in _SHAPE_KEYS if theirs.get(k) != config.get(k)]
    if diffs:
        raise MergeError(
            f"base mismatch: the adapter was trained on {path}, and --base {base} differs ({'; '.join(diffs)}). "
            "Merge into the base the adapter was trained on."
        )


def _download(repo_id: str, revision: str | None) -> Path:
    # Streaming needs the shard files on disk, so a hub base is fetched (cached) first.
    from huggingface_hub import snapshot_download

    from tifa_lite.hub import local_or_reachable

    local = local_or_reachable(repo_id, revision, key="base model")
    if local != repo_id:
        return Path(local)
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))


def check_compatible(info: AdapterInfo, base: BaseModelRef, base_shapes: dict[str, tuple[int, ...]] | None) -> None:
    """Architecture, vocabulary and every LoRA shape against the base, before any work."""
    recorded = (getattr(info.peft_config, "auto_mapping", None) or {}).get("base_model_class")
    archs = base.config.get("architectures") or []
    if recorded and archs and recorded not in archs:
        raise MergeError(
            f"base mismatch: the adapter was trained on a {recorded}, but the base {base.path} is a "
            f"{', '.join(archs)}. Pass the adapter's own base with --base."
        )
    vocab = base.config.get("vocab_size") or (base.config.get("text_config") or {}).get("vocab_size")
    tok_len = _tokenizer_length(info.path)
    if vocab and tok_len and tok_len > vocab:
        raise MergeError(
            f"base mismatch: the adapter's tokenizer has {tok_len} tokens but the base {base.path} embeds only "
            f"{vocab} (vocab_size). The adapter belongs to another base, or training added tokens "
            "(then the embeddings must be saved with the adapter: lora.modules_to_save)."
        )
    if base_shapes is None:
        return
    problems = []
    fan_in_fan_out = bool(getattr(info.peft_config, "fan_in_fan_out", False))
    for module, parts in info.modules.items():
        shape = base_shapes.get(f"{module}.weight")
        if shape is None:
            problems.append(f"{module}: no such weight in the base")
            continue
        out_f, in_f = (shape[1], shape[0]) if fan_in_fan_out else (shape[0], shape[1])
        a, b = tuple(parts["lora_A"].shape), tuple(parts["lora_B"].shape)
        if len(shape) != 2 or a[1] != in_f or b[0] != out_f or a[0] != b[1]:
            problems.append(f"{module}: base {list(shape)} vs lora_A {list(a)} / lora_B {list(b)}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise MergeError(
            f"base mismatch between adapter {info.path} and base {base.path}: " + "; ".join(problems[:3]) + more
            + ". Pass the adapter's own base with --base."
        )


def _tokenizer_length(path: Path) -> int | None:
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(path)))

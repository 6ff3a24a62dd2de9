"""One loader for everything that runs a trained model rather than training it: chat,
the evaluators (GSM8K, preference, role-play), the pair builders and the quickstart.

A run's adapter folder names its base in ``resolved_config.yaml`` and carries the
tokenizer it trained with (chat template included), so ``--adapter`` alone is enough.
It goes through the same resolve/load code as training, so a base that trains also
loads here (embedded name, GGUF, ModelScope id, 4-bit)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError

log = logging.getLogger(__name__)


def base_fields_from_adapter(adapter_dir: Path) -> dict[str, Any]:
    """The ``model:`` section the adapter's run resolved, or {} for a foreign adapter."""
    import yaml

    resolved_yaml = adapter_dir / "resolved_config.yaml"
    if not resolved_yaml.is_file():
        return {}
    return dict((yaml.safe_load(resolved_yaml.read_text(encoding="utf-8")) or {}).get("model") or {})


def load_inference_model(
    model: str | Path | None,
    adapter: str | Path | None = None,
    *,
    chat_template: str | None = None,
    think_policy: str = "auto",
    bits: int | None = None,
    precision: str = "auto",
    reward_head: bool = False,
    hardware=None,
):
    """(model, tokenizer, model_dir, adapter_dir, model_config), in eval mode.

    ``model`` may be None when the adapter's run names its base. ``reward_head`` loads a
    one-logit sequence-classification model (a reward model or its SEQ_CLS adapter).
    ``hardware``: a training run's own (its plan's), for a model loaded inside that run."""
    from tifa_lite.config.schema import ModelConfig, RecipeConfig
    from tifa_lite.console import quiet_libraries
    from tifa_lite.modeling.load import load_model
    from tifa_lite.runplan import resolve_plan

    quiet_libraries()

    adapter_dir = Path(adapter).expanduser().resolve() if adapter else None
    model_fields: dict[str, Any] = {}
    if adapter_dir is not None:
        from tifa_lite.verify import check_weights_folder

        if not adapter_dir.exists():
            raise ConfigError(f"--adapter {adapter_dir}: the folder does not exist.")
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ConfigError(f"--adapter {adapter_dir}: no adapter_config.json, so this is not a LoRA adapter folder.")
        check_weights_folder(adapter_dir, torch_files=True)
        model_fields = base_fields_from_adapter(adapter_dir)
    if model is not None:
        model_fields.update(name_or_path=str(model), source="auto", gguf_file=None)
    if not model_fields.get("name_or_path"):
        raise ConfigError("give --model (a folder, an embedded name or a hub id), or an --adapter from a tifa_lite run.")
    if chat_template is not None:
        model_fields["chat_template"] = chat_template
    model_fields["think_policy"] = think_policy
    config = RecipeConfig(
        model=ModelConfig(**model_fields), quant={"bits": bits}, lora={"enabled": bits is not None},
        train={"method": "reward" if reward_head else "sft"},
    )
    plan = resolve_plan(config, purpose="inference", precision=precision, hardware=hardware)
    for line in plan.describe():
        log.info("plan: %s", line)
    resolved = plan.model
    tokenizer = _tokenizer(config, resolved, adapter_dir, chat_template)
    lm = load_model(config, plan)
    lm.config.use_cache = True  # load_model turns the cache off for training
    if lm.config.pad_token_id is None:
        lm.config.pad_token_id = tokenizer.pad_token_id  # a classification head pools at the last non-pad token
    if adapter_dir is not None:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(adapter_dir))
    lm.eval()
    if plan.device == "cuda" and bits is None:
        lm.to("cuda")
    return lm, tokenizer, Path(resolved.path), adapter_dir, config.model


def _tokenizer(config, resolved, adapter_dir: Path | None, chat_template: str | None):
    from tifa_lite.modeling import load_tokenizer

    if adapter_dir is None or not (adapter_dir / "tokenizer_config.json").is_file():
        return load_tokenizer(config, resolved)
    # The run saved the tokenizer it trained with, chat template included: use it the same way.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template is not None:
        from tifa_lite.conversation.templates import apply_chat_template_choice

        apply_chat_template_choice(tokenizer, config.model)
    return tokenizer

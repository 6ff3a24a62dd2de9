from tifa_lite.modeling.load import load_for_training, load_model, load_tokenizer, lora_config
from tifa_lite.modeling.resolve import ResolvedModel, resolve_model

__all__ = ["load_for_training", "load_model", "load_tokenizer", "lora_config", "resolve_model", "ResolvedModel"]

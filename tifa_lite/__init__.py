"""tifa_lite: QLoRA recipes (SFT/CPT, GRPO, DPO) for one cheap GPU, scale-up by profile."""

from __future__ import annotations

__version__ = "0.1.0"


from tifa_lite.interrupts import api as _api


@_api("train(...)")
def train(recipe, profile=None, **overrides):
    """Run a recipe: ``train("recipes/sft_qlora_roleplay.yaml", **{"train.max_steps": 2})``."""
    from tifa_lite.training.runner import train as _train

    return _train(recipe, profile=profile, **overrides)


def load_recipe(recipe, overrides=None, profile=None):
    from tifa_lite.config import load_recipe as _load

    return _load(recipe, overrides, profile)


@_api("merge(...)")
def merge(adapter, output, **kwargs):
    """Merge a LoRA/QLoRA adapter into its 16-bit base, self-checked: ``merge("outputs/run", "outputs/merged")``."""
    from tifa_lite.merging import merge as _merge

    return _merge(adapter, output, **kwargs)


def chat(model="smollm2-135m-instruct", adapter=None, **kwargs):
    """A chat session for notebooks: ``session = chat(adapter="outputs/run"); session.say("hi")``."""
    from tifa_lite.conversation.session import chat as _chat

    return _chat(model, adapter, **kwargs)


__all__ = ["train", "load_recipe", "merge", "chat", "__version__"]

"""Model-loading backends: transformers + PEFT (always) and unsloth (CUDA, optional).

Nothing here imports unsloth at import time; see :mod:`tifa_lite.backends.select`.
"""

from __future__ import annotations

from tifa_lite.backends.select import recipe_blocker, select_backend, unsloth_blocker, unsloth_installed
from typing import TYPE_CHECKING

from tifa_lite.config.schema import RecipeConfig

if TYPE_CHECKING:
    from tifa_lite.runplan import RunPlan


def preload_backend(backend: str) -> None:
    """For unsloth (the run plan's backend), import it now: unsloth patches transformers and
    TRL when imported and warns that optimisations may be missing if they were imported
    first. Call before anything imports transformers (in a run: before tifa_lite.training.outputs)."""
    if backend == "unsloth":
        import unsloth  # noqa: F401  (imported for its patches)


def load_for_training_with_backend(config: RecipeConfig, plan: "RunPlan | None" = None):
    """Like :func:`tifa_lite.modeling.load_for_training` (``(model, tokenizer, peft_config)``),
    loading through unsloth when the run plan's backend is unsloth."""
    if plan is None:
        from tifa_lite.runplan import resolve_plan

        plan = resolve_plan(config)
    if plan.backend == "unsloth":
        from tifa_lite.backends.unsloth_loader import load_with_unsloth

        return load_with_unsloth(config, plan)
    from tifa_lite.modeling.load import load_for_training

    return load_for_training(config, plan)


__all__ = [
    "load_for_training_with_backend",
    "preload_backend",
    "recipe_blocker",
    "select_backend",
    "unsloth_blocker",
    "unsloth_installed",
]

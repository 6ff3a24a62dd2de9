"""Model-loading backends: transformers + PEFT (always) and unsloth (CUDA, optional).

Nothing here imports unsloth at import time; see :mod:`tifa_lite.backends.select`.
"""

from __future__ import annotations

from tifa_lite.backends.select import recipe_blocker, select_backend, unsloth_blocker, unsloth_installed
from tifa_lite.config.schema import RecipeConfig
from tifa_lite.hardware import Hardware


def preload_backend(config: RecipeConfig, hardware: Hardware) -> str:
    """Choose the backend and, for unsloth, import it now: unsloth patches transformers and
    TRL when imported and warns that optimisations may be missing if they were imported
    first. Call before anything imports transformers (in a run: before tifa_lite.training.outputs)."""
    name, _reason = select_backend(config, hardware)
    if name == "unsloth":
        import unsloth  # noqa: F401  (imported for its patches)
    return name


def load_for_training_with_backend(
    config: RecipeConfig, precision: str | None = None, hardware: Hardware | None = None,
    backend: str | None = None,
):
    """Like :func:`tifa_lite.modeling.load_for_training` (``(model, tokenizer, peft_config)``),
    loading through unsloth when :func:`select_backend` picks it (or ``backend``, the name
    :func:`preload_backend` returned, says so)."""
    from tifa_lite.hardware import detect, resolve_precision

    hardware = hardware or detect()
    precision = precision or resolve_precision(config.train.precision, hardware)
    name = backend or select_backend(config, hardware)[0]
    if name == "unsloth":
        from tifa_lite.backends.unsloth_loader import load_with_unsloth

        return load_with_unsloth(config, precision, hardware)
    from tifa_lite.modeling.load import load_for_training

    return load_for_training(config, precision, hardware)


__all__ = [
    "load_for_training_with_backend",
    "preload_backend",
    "recipe_blocker",
    "select_backend",
    "unsloth_blocker",
    "unsloth_installed",
]

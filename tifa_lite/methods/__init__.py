"""Training methods. Each module exposes ``build_trainer(run: Run) -> transformers.Trainer``
that composes one TRL trainer; :func:`tifa_lite.training.runner.train` does everything around it
(config, model, output folder, resume, metrics, final save)."""

from __future__ import annotations

import importlib

METHOD_MODULES = {
    "sft": "tifa_lite.methods.sft",
    "cpt": "tifa_lite.methods.cpt",
    "grpo": "tifa_lite.methods.grpo",
    "dpo": "tifa_lite.methods.dpo",
    "orpo": "tifa_lite.methods.dpo",
    "kto": "tifa_lite.methods.dpo",
    "simpo": "tifa_lite.methods.dpo",
    "reward": "tifa_lite.methods.reward",
}


def get_method(name: str):
    return importlib.import_module(METHOD_MODULES[name])

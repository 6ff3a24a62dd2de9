"""Budgets: the overrides that shrink (or keep) a recipe, per training method.

- ``full``: the recipe as written (a 7B QLoRA run on a free T4/A10).
- ``gpu-small``: the embedded SmolLM2-135M for a few dozen steps — a minutes-long
  rehearsal on any GPU.
- ``cpu-tiny``: the embedded model, two steps on a handful of rows — how CI executes
  every notebook and the pipeline end to end on a 2-core CPU.

Used by the notebooks (``TIFA_LITE_BUDGET``) and by pipelines (``budget=cpu-tiny``).
"""

from __future__ import annotations

import os
from typing import Any

EMBEDDED = "smollm2-135m-instruct"

_COMMON_TINY: dict[str, Any] = {
    "model.name_or_path": EMBEDDED,
    "model.source": "auto",
    "train.max_steps": 2,
    "train.warmup_ratio": 0.0,  # two steps: a warmup would spend the first at learning rate 0
    "train.precision": "fp32",
    "train.auto_fit": False,
    "quant.compute_dtype": "auto",
    "train.per_device_batch_size": 2,
    "train.gradient_accumulation_steps": 1,
    "train.global_batch_size": None,
    "train.gradient_checkpointing": False,
    "train.logging_steps": 1,
    "train.save_steps": 1000,
    "train.progress_bar": False,
    "data.limit": 8,
    "data.eval_ratio": 0.0,
    "data.max_length": 384,
}

BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {},
    "gpu-small": {
        "*": {"model.name_or_path": EMBEDDED, "model.source": "auto", "train.max_steps": 60, "data.max_length": 512},
    },
    "cpu-tiny": {
        "*": _COMMON_TINY,
        "grpo": {
            # A shipped GSM8K-format file: recipes default to the hub's openai/gsm8k.
            "data.path": "data/arithmetic/train.jsonl",
            "data.limit": 4,
            "train.per_device_batch_size": 2,
            "grpo.num_generations": 2,
            "grpo.max_completion_length": 16,
            "grpo.use_vllm": "off",
        },
        "dpo": {"data.limit": 4, "train.per_device_batch_size": 1},
    },
}


def default_budget() -> str:
    chosen = os.environ.get("TIFA_LITE_BUDGET")
    if chosen:
        return chosen
    import torch

    return "full" if torch.cuda.is_available() else "cpu-tiny"


def budget_overrides(budget: str, method: str = "sft", output_dir: str | None = None) -> dict[str, Any]:
    """Dotted overrides for ``train(recipe, **overrides)``."""
    if budget not in BUDGETS:
        from tifa_lite.errors import ConfigError

        raise ConfigError(f"BUDGET={budget!r}: choose one of {', '.join(BUDGETS)}.")
    table = BUDGETS[budget]
    out = {**table.get("*", {}), **table.get(method, {})}
    if output_dir:
        out["train.output_dir"] = output_dir
        out["train.overwrite_output_dir"] = True
    return out

"""Helpers the notebooks share: where we run, and where the checkout is. Budgets
(what a BUDGET adds to a recipe) live in :mod:`tifa_lite.training.budgets`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tifa_lite.training.budgets import BUDGETS, budget_overrides, default_budget

__all__ = ["BUDGETS", "budget_overrides", "default_budget", "environment", "find_repo_root"]


def environment() -> str:
    """colab | modelscope | kaggle | local."""
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG") or os.environ.get("COLAB_GPU"):
        return "colab"
    # ModelScope's DSW notebooks set these; /mnt/workspace is their persistent disk.
    if os.environ.get("MODELSCOPE_ENVIRONMENT") or os.environ.get("DSW_INSTANCE_ID") or Path("/mnt/workspace").is_dir():
        return "modelscope"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE"):
        return "kaggle"
    return "local"


def find_repo_root(start: str | Path | None = None) -> Path | None:
    """The checkout holding recipes/ and data/, so relative recipe paths work from notebooks/."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "recipes").is_dir() and (folder / "tifa_lite").is_dir():
            return folder
    return None

"""Resuming continues the same run, so the checkpoint must have been made by this recipe.

A checkpoint holds the weights of one base and one LoRA shape, optimizer state for that
parameter set and a learning-rate schedule. A different base or adapter shape fails deep
in loading with a shape mismatch; a different learning rate or schedule is silently
replaced by the checkpoint's (transformers restores the scheduler state over the new
one); different data or batch continues a run that never existed. So before anything is
loaded, the resolved config that made the checkpoint (``resolved_config.yaml`` beside
it) is compared with this one and every differing key is named. Only keys that say how
the same run is executed, reported or saved may differ.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from tifa_lite.config import dump_config
from tifa_lite.config.schema import RecipeConfig
from tifa_lite.errors import ConfigError

log = logging.getLogger(__name__)

RESOLVED_CONFIG = "resolved_config.yaml"

# Sections or keys a resumed run may change. The per-device split of the global batch is
# free (the batch rule keeps train.global_batch_size, which is compared), and so is the
# device count — except under DeepSpeed, whose checkpoints hold one optimizer shard per rank.
FREE_KEYS = (
    "profile", "description", "hardware", "sampling",
    "model.attn_implementation",
    "data.eval_path",
    "train.output_dir", "train.overwrite_output_dir", "train.resume", "train.logging_steps", "train.save_steps",
    "train.save_total_limit", "train.eval_steps", "train.report_to", "train.progress_bar",
    "train.dataloader_num_workers", "train.keep_checkpoints", "train.gradient_checkpointing", "train.auto_fit",
    "train.use_liger_kernel",
    "train.per_device_batch_size", "train.gradient_accumulation_steps",
    "grpo.use_vllm", "grpo.vllm_gpu_memory_utilization", "grpo.log_completions",
    "distributed.micro_batch_size", "distributed.launcher", "distributed.master_port", "distributed.env",
)
WORLD_KEYS = ("distributed.nnodes", "distributed.nproc_per_node", "distributed.world_size")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _is_free(key: str, free: tuple[str, ...]) -> bool:
    return any(key == f or key.startswith(f + ".") for f in free)


def differing_keys(before: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, checkpoint's value, this run's value) for every key that must match and does not.
    A key only one side has (another tifa_lite version) is not a difference."""
    old, new = flatten(before), flatten(now)
    free = FREE_KEYS
    if not (old.get("distributed.deepspeed") or new.get("distributed.deepspeed")):
        free = free + WORLD_KEYS
    return [(k, old[k], new[k]) for k in sorted(old.keys() & new.keys()) if old[k] != new[k] and not _is_free(k, free)]


def check_same_run(checkpoint: Path, config: RecipeConfig) -> None:
    """Raise ConfigError naming every key in which ``config`` differs from the recipe that
    wrote ``checkpoint``."""
    recorded = Path(checkpoint).parent / RESOLVED_CONFIG
    if not recorded.is_file():
        log.warning("resuming from %s: no %s beside it, so the recipe it was made with cannot be checked.",
                    checkpoint, RESOLVED_CONFIG)
        return
    before = yaml.safe_load(recorded.read_text(encoding="utf-8")) or {}
    diffs = differing_keys(before, yaml.safe_load(dump_config(config)))
    if diffs:
        lines = "\n".join(f"  {key}: {old!r} in the checkpoint's recipe, {new!r} now" for key, old, new in diffs)
        raise ConfigError(
            f"train.resume: {checkpoint} was made by a different recipe ({recorded}), and resuming it would continue "
            f"a run this recipe never started. Differing keys:\n{lines}\nPut these keys back to resume, or start "
            f"over: train.resume=never (discards {Path(checkpoint).parent}) or another train.output_dir."
        )


def keep_previous_config(work_dir: Path) -> Path | None:
    """Rename the last attempt's resolved_config.yaml to resolved_config.attemptN.yaml
    (N = 1 for the first attempt), so a resumed run keeps every attempt's config."""
    current = work_dir / RESOLVED_CONFIG
    if not current.is_file():
        return None
    n = 1
    while (work_dir / f"resolved_config.attempt{n}.yaml").exists():
        n += 1
    kept = work_dir / f"resolved_config.attempt{n}.yaml"
    current.rename(kept)
    return kept


def checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])

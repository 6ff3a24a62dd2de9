"""What a training process does differently when it is one rank of many.

``prepare_distributed(config)`` is called by :func:`tifa_lite.runner.run_config` before
the model is loaded. For a single process without DeepSpeed it only applies the
global-batch rule (a no-op for a plain recipe). Under a launcher it also checks that
the launcher started as many processes as the config is written for, and brings up
the DeepSpeed process group through accelerate *before* ``TrainingArguments`` exists.

Why bring up the process group ourselves: ``TrainingArguments`` asks accelerate for a
DeepSpeed state without naming a backend, and accelerate only knows the backend for an
accelerator (nccl on CUDA). On the CPU it then falls back to "no distributed training"
— one process per rank that each think they are rank 0 of 1, while DeepSpeed itself
runs a world of N: the batch-size check fails and every rank writes the outputs. Creating
the same ``PartialState`` with ``backend="gloo"`` on the CPU (nccl on GPUs, as
accelerate would) and telling the trainer to use it (``use_configured_state``) keeps
one code path for the H100 run and its CPU rehearsal; only the backend string differs.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.distributed.batch import apply_batch_rule
from tifa_lite.errors import ConfigError

log = logging.getLogger(__name__)

# Matches TrainingArguments.ddp_timeout: a ZeRO-3 save of a large model can keep ranks
# waiting on rank 0 for many minutes, longer than NCCL's 10-minute default.
PROCESS_GROUP_TIMEOUT_S = 1800

_state_ready = False


def env_world_size() -> int | None:
    value = os.environ.get("WORLD_SIZE")
    return int(value) if value and value.isdigit() else None


def env_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """Global rank 0 (True outside a launcher)."""
    return env_rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op when no process group is up."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def read_deepspeed_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"distributed.deepspeed={path}: no such DeepSpeed JSON (shipped ones: recipes/deepspeed/).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}).") from None


def check_deepspeed_config(config: RecipeConfig) -> dict[str, Any] | None:
    """The DeepSpeed JSON is the source of truth; the recipe's keys must agree with it."""
    d = config.distributed
    if not d.deepspeed:
        if d.zero_stage:
            raise ConfigError(
                f"distributed.zero_stage={d.zero_stage} without distributed.deepspeed: name the DeepSpeed JSON "
                "(recipes/deepspeed/zero3.json or zero2.json)."
            )
        return None
    ds = read_deepspeed_config(d.deepspeed)
    zero = ds.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    if d.zero_stage is not None and stage != d.zero_stage:
        raise ConfigError(
            f"distributed.zero_stage={d.zero_stage} but {d.deepspeed} sets zero_optimization.stage={stage}. "
            "Point distributed.deepspeed at the matching JSON."
        )
    if stage == 3 and d.save_16bit_model and not zero.get("stage3_gather_16bit_weights_on_model_save", False):
        raise ConfigError(
            f"distributed.save_16bit_model=true but {d.deepspeed} lacks "
            "zero_optimization.stage3_gather_16bit_weights_on_model_save=true: under ZeRO-3 the final save would "
            "write only sharded DeepSpeed checkpoints. Set it in the JSON (recipes/deepspeed/zero3.json does)."
        )
    for key in ("offload_optimizer", "offload_param"):
        device = (zero.get(key) or {}).get("device", "none")
        if device not in ("none", None):
            log.warning("%s: zero_optimization.%s.device=%s — offload trades a lot of speed for memory.",
                        d.deepspeed, key, device)
    return ds


def prepare_distributed(config: RecipeConfig) -> RecipeConfig:
    """Resolve batch sizes and, under a launcher with DeepSpeed, set up the process group."""
    world = env_world_size()
    if world is not None and world != config.distributed.world_size:
        raise ConfigError(
            f"this process was launched in a world of {world} processes (WORLD_SIZE) but the resolved config is "
            f"written for distributed.world_size={config.distributed.world_size} "
            f"(nnodes={config.distributed.nnodes} × nproc_per_node={config.distributed.nproc_per_node}). Start it "
            "with `tifa-lite launch`, which passes the matching keys, or set distributed.nnodes, "
            "distributed.nproc_per_node and distributed.world_size yourself."
        )
    if world is None and config.distributed.world_size > 1:
        raise ConfigError(
            f"the config is written for {config.distributed.world_size} processes (distributed.world_size) but this "
            "is a single process. Start it with `tifa-lite launch RECIPE --profile … --nnodes N --nproc-per-node P "
            "--node-rank R --master-addr HOST`."
        )
    if world is None and config.distributed.deepspeed:
        raise ConfigError(
            f"distributed.deepspeed={config.distributed.deepspeed} needs a launcher (DeepSpeed sets up its process "
            "group from torchrun's environment), even on one GPU: tifa-lite launch RECIPE --profile … "
            "--nnodes 1 --nproc-per-node 1."
        )
    check_deepspeed_config(config)
    config, plan = apply_batch_rule(config)
    if is_main_process():
        log.info("batch: %s", plan.describe())
    if world is not None and config.distributed.deepspeed:
        _init_deepspeed_state()
    return config


def _init_deepspeed_state() -> None:
    global _state_ready
    import torch
    from accelerate import PartialState

    backend = None if torch.cuda.is_available() else "gloo"
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend=backend, timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT_S))
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    _state_ready = True


def training_arguments_kwargs(config: RecipeConfig) -> dict[str, Any]:
    """Extra ``TrainingArguments`` keys for a DeepSpeed run (merged by methods.common)."""
    if not config.distributed.deepspeed:
        return {}
    kwargs: dict[str, Any] = {"deepspeed": config.distributed.deepspeed, "ddp_timeout": PROCESS_GROUP_TIMEOUT_S}
    if _state_ready:
        # The state prepare_distributed brought up; without this TrainingArguments resets it.
        kwargs["accelerator_config"] = {"use_configured_state": True}
    return kwargs

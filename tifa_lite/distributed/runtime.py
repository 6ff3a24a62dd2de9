"""What a training process does differently when it is one rank of many.

``prepare_distributed(config)`` is called by :func:`tifa_lite.training.runner.run_config` before
the output folder is touched and before the model is loaded. For a single process it
only applies the global-batch rule (a no-op for a plain recipe). Under a launcher it also
checks that the launcher started as many processes as the config is written for, and
brings up the process group through accelerate *before* ``TrainingArguments`` exists —
for DeepSpeed and plain DDP alike — so that rank 0 can own the output folder while the
other ranks wait at a barrier.

Why bring up the process group ourselves: ``TrainingArguments`` asks accelerate for a
DeepSpeed state without naming a backend, and accelerate only knows the backend for an
accelerator (nccl on CUDA). On the CPU it then falls back to "no distributed training"
— one process per rank that each think they are rank 0 of 1, while DeepSpeed itself
runs a world of N: the batch-size check fails and every rank writes the outputs. Creating
the same ``PartialState`` with ``backend="gloo"`` on the CPU (nccl on GPUs, as
accelerate would) and telling the trainer to use it (``use_configured_state``) keeps
one code path for the H100 run and its CPU rehearsal; only the backend string differs.

Why the trainer's arguments are made once more before the model is loaded
(:func:`tifa_lite.methods.common.early_training_arguments`): transformers decides whether ``from_pretrained``
partitions parameters as they load (``deepspeed.zero.Init``) by asking a module-level
weak reference to the live DeepSpeed config, which only ``TrainingArguments`` sets. A
model loaded before any exists is materialised whole on every rank.
"""

from __future__ import annotations

import copy
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


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK): the node's GPU it owns."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def barrier() -> None:
    """Wait for every rank; a no-op when no process group is up."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


_SAVE_16BIT_ONLY_ZERO3 = (
    "distributed.save_16bit_model=false, but {where}: only ZeRO-3 shards the weights, everywhere else every rank "
    "holds the whole model and it is always saved. Remove the key (or set it true), or use a ZeRO-3 JSON."
)


def read_deepspeed_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"distributed.deepspeed={path}: no such DeepSpeed JSON (shipped ones: recipes/deepspeed/).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}).") from None


def check_deepspeed_config(config: RecipeConfig) -> dict[str, Any] | None:
    """The DeepSpeed JSON is the source of truth for the ZeRO stage (``distributed.zero_stage``
    must agree with it); ``distributed.save_16bit_model`` is the recipe's, and the JSON may
    not contradict it."""
    d = config.distributed
    if not d.deepspeed:
        if not d.save_16bit_model:
            raise ConfigError(_SAVE_16BIT_ONLY_ZERO3.format(where="this run has no distributed.deepspeed"))
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
    gather = zero.get("stage3_gather_16bit_weights_on_model_save")
    if stage != 3 and not d.save_16bit_model:
        raise ConfigError(_SAVE_16BIT_ONLY_ZERO3.format(where=f"{d.deepspeed} sets ZeRO stage {stage}"))
    if stage == 3 and gather is not None and gather != d.save_16bit_model:
        raise ConfigError(
            f"distributed.save_16bit_model={str(d.save_16bit_model).lower()} but {d.deepspeed} sets "
            f"zero_optimization.stage3_gather_16bit_weights_on_model_save={str(gather).lower()}. The recipe key "
            "decides: remove that entry from the JSON (recipes/deepspeed/zero3.json has none)."
        )
    for key in ("offload_optimizer", "offload_param"):
        device = (zero.get(key) or {}).get("device", "none")
        if device not in ("none", None):
            log.warning("%s: zero_optimization.%s.device=%s — offload trades a lot of speed for memory.",
                        d.deepspeed, key, device)
    return ds


def effective_deepspeed_config(config: RecipeConfig) -> dict[str, Any] | None:
    """The DeepSpeed JSON as the trainer gets it: under ZeRO-3 the recipe's
    ``distributed.save_16bit_model`` sets whether each save gathers the 16-bit weights."""
    ds = check_deepspeed_config(config)
    if ds is None:
        return None
    ds = copy.deepcopy(ds)
    zero = ds.setdefault("zero_optimization", {})
    if zero.get("stage", 0) == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = config.distributed.save_16bit_model
    return ds


def prepare_distributed(config: RecipeConfig) -> RecipeConfig:
    """Resolve batch sizes and, under a launcher, set up the process group."""
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
    if world is not None:
        _init_process_group(deepspeed=bool(config.distributed.deepspeed))
    return config


def _init_process_group(deepspeed: bool) -> None:
    global _state_ready
    import torch
    from accelerate import PartialState

    # accelerate also binds a CUDA rank to its LOCAL_RANK GPU here.
    on_cpu = not torch.cuda.is_available()
    kwargs: dict[str, Any] = {"backend": "gloo" if on_cpu else None}
    if deepspeed:
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    elif on_cpu:
        # Without cpu=True accelerate counts the ranks but calls the state "not distributed",
        # and the trainer would then train one unsynchronised model per rank (no DDP wrapper).
        kwargs["cpu"] = True
    try:
        PartialState(timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT_S), **kwargs)
    finally:
        os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
    _state_ready = True


def training_arguments_kwargs(config: RecipeConfig) -> dict[str, Any]:
    """Extra ``TrainingArguments`` keys for a launched or DeepSpeed run (merged by methods.common)."""
    kwargs: dict[str, Any] = {}
    if _state_ready:
        # The state prepare_distributed brought up; without this TrainingArguments resets it.
        kwargs["accelerator_config"] = {"use_configured_state": True}
        kwargs["ddp_timeout"] = PROCESS_GROUP_TIMEOUT_S
    if config.distributed.deepspeed:
        kwargs["deepspeed"] = effective_deepspeed_config(config)
        kwargs["ddp_timeout"] = PROCESS_GROUP_TIMEOUT_S
    return kwargs


def load_report(model) -> str:
    """One line per rank after loading: how much of the model this rank holds, and its host RAM."""
    params = list(model.parameters())
    total = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    # A ZeRO-3 placeholder is an empty tensor; its shard of the values lives in ds_tensor.
    partitioned = sum(hasattr(p, "ds_tensor") for p in params)
    if partitioned:
        held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
        line = (f"ZeRO-3 partitioned {partitioned} of {len(params)} parameter tensors at load; this rank holds "
                f"{held:,} of {total:,} elements")
    else:
        line = f"the whole model ({total:,} elements) is on this rank"
    rss = resident_bytes()
    return line + (f"; host RSS {rss / 2**30:.2f} GiB" if rss is not None else "")


def weights_fingerprint(model) -> str:
    """Sum and absolute sum of this rank's trainable weights. Ranks that train one model in
    sync (DDP, ZeRO-1/2) print the same; a rank that trained alone does not. Summed in
    float64 over slices where the weights are, so a 7B model costs reductions, not a copy."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    if any(hasattr(p, "ds_tensor") for p in trainable):
        return "ZeRO-3 shards differ by rank by design"
    total = absolute = 0.0
    with torch.no_grad():
        for p in trainable:
            for piece in p.detach().reshape(-1).split(1 << 24):
                piece = piece.double()
                total += piece.sum().item()
                absolute += piece.abs().sum().item()
    return f"trainable weights fingerprint {total:.12e}/{absolute:.12e} over {len(trainable)} tensors"


def resident_bytes() -> int | None:
    """This process's resident set (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None

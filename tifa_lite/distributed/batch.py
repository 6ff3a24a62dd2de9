"""The global-batch rule: a recipe states how many sequences one optimizer step sees;
a profile states how many devices there are and how many sequences fit on one. The
split between micro-batch and gradient accumulation follows, so switching from one
T4 to 2×8 H100 keeps the optimisation (global batch, learning-rate schedule) the same.

Rule (applied by :func:`apply_batch_rule`):

    G = train.global_batch_size, or — when the recipe does not state it —
        train.per_device_batch_size × train.gradient_accumulation_steps
        (the recipe as written for one device)
    W = distributed.world_size
    m = distributed.micro_batch_size, or train.per_device_batch_size
    G must be a multiple of W; each rank then owns S = G / W sequences per step.
    micro = the largest divisor of S that is ≤ m   (m itself when m divides S)
    accumulation = S / micro
    so micro × accumulation × W = G exactly.

The result is written back with ``train.global_batch_size = G``, which makes the rule
idempotent: resolving an already resolved config changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    world_size: int
    micro_batch: int
    grad_accum: int
    requested_micro: int

    @property
    def lowered(self) -> bool:
        return self.micro_batch != self.requested_micro

    def describe(self) -> str:
        line = (
            f"global batch {self.global_batch} = micro-batch {self.micro_batch} × gradient accumulation "
            f"{self.grad_accum} × world size {self.world_size}"
        )
        if self.lowered:
            line += (
                f" (micro-batch lowered from {self.requested_micro}: it must divide "
                f"{self.global_batch}/{self.world_size} = {self.global_batch // self.world_size})"
            )
        return line


def plan_batch(global_batch: int, world_size: int, micro_batch: int) -> BatchPlan:
    """Pure arithmetic of the rule above; raises ConfigError naming the keys to change."""
    if global_batch < 1 or world_size < 1 or micro_batch < 1:
        raise ConfigError(
            f"batch sizes must be positive (global {global_batch}, world {world_size}, micro {micro_batch})"
        )
    if global_batch % world_size:
        low = global_batch - global_batch % world_size
        high = low + world_size
        example = f"{low} or {high}" if low else str(high)
        raise ConfigError(
            f"train.global_batch_size={global_batch} is not a multiple of the world size {world_size}: every "
            f"rank must see the same number of sequences per step. Set train.global_batch_size to a multiple of "
            f"{world_size} (e.g. {example})."
        )
    per_rank = global_batch // world_size
    micro = max(d for d in range(1, min(micro_batch, per_rank) + 1) if per_rank % d == 0)
    return BatchPlan(
        global_batch=global_batch,
        world_size=world_size,
        micro_batch=micro,
        grad_accum=per_rank // micro,
        requested_micro=micro_batch,
    )


def intended_global_batch(config: RecipeConfig) -> int:
    t = config.train
    return t.global_batch_size or t.per_device_batch_size * t.gradient_accumulation_steps


def plan_for(config: RecipeConfig) -> BatchPlan:
    requested = config.distributed.micro_batch_size or config.train.per_device_batch_size
    plan = plan_batch(intended_global_batch(config), config.distributed.world_size, requested)
    if config.train.method == "grpo":
        _check_grpo(config, plan)
    return plan


def _check_grpo(config: RecipeConfig, plan: BatchPlan) -> None:
    # TRL samples num_generations completions per prompt and normalises rewards inside each
    # group, so one optimizer step's sequences (micro × world × accumulation, TRL's
    # generation batch) must hold whole groups.
    n = config.grpo.num_generations
    if plan.global_batch % n:
        raise ConfigError(
            f"GRPO: the global batch {plan.global_batch} (train.global_batch_size, or per_device_batch_size × "
            f"gradient_accumulation_steps) must be a multiple of grpo.num_generations={n}, so that every prompt's "
            f"group of {n} completions lands in the same step. Change one of them."
        )


def apply_batch_rule(config: RecipeConfig) -> tuple[RecipeConfig, BatchPlan]:
    """Return a copy of ``config`` with micro-batch/accumulation derived by the rule."""
    plan = plan_for(config)
    resolved = config.model_copy(deep=True)
    # Assign the section whole: the section validators see consistent values at once.
    resolved.train = resolved.train.model_copy(
        update=dict(
            global_batch_size=plan.global_batch,
            per_device_batch_size=plan.micro_batch,
            gradient_accumulation_steps=plan.grad_accum,
        )
    )
    return resolved, plan

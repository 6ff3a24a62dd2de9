"""Rewards for GRPO: the R1-Zero rule rewards, repetition and length shaping (TRL's),
TRL's built-ins by ``trl:<name>`` and user functions by reference. See
:mod:`tifa_lite.rewards.registry`."""

from tifa_lite.rewards.registry import (
    R1_ZERO_REWARDS,
    REGISTRY,
    NamedReward,
    ResolvedRewards,
    RewardError,
    build_rewards,
    resolve_reward,
)

__all__ = [
    "R1_ZERO_REWARDS", "REGISTRY", "NamedReward", "ResolvedRewards", "RewardError", "build_rewards", "resolve_reward",
]

"""Merge a LoRA/QLoRA adapter into its 16-bit base, shard by shard, with a self-check."""

from tifa_lite.merging.adapter import MergeError
from tifa_lite.merging.api import merge

__all__ = ["merge", "MergeError"]

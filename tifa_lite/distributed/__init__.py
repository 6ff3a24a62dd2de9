"""Scale-up mode: the same recipe on many GPUs through DeepSpeed (ZeRO-2/3), switched by
a profile. We write the glue only — the global-batch rule, launch command lines and
pre-flight checks; sharding, communication and checkpointing are DeepSpeed's, driven by
transformers' Trainer through accelerate."""

from tifa_lite.distributed.batch import BatchPlan, apply_batch_rule, plan_batch

__all__ = ["BatchPlan", "apply_batch_rule", "plan_batch"]

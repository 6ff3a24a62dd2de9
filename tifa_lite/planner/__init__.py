"""Memory planner: will this recipe fit this card, and what to change so it does.

Reads the model's config only (never weights) and stays pure Python so
``tifa-lite plan`` answers in well under a second without importing torch.
"""

from tifa_lite.planner.fit import (
    Change,
    apply_auto_fit,
    capacity_gib,
    check_generation_reserve,
    fits,
    plan_config,
    plan_input,
    resolve_gpu,
    suggest,
)
from tifa_lite.planner.hardware_catalog import GPU, GPUS, gpu_by_name
from tifa_lite.planner.memory import Plan, PlanInput, estimate
from tifa_lite.planner.shapes import ModelShape, known_shape, model_shape_from_config_dict, read_model_shape

__all__ = [
    "Change", "GPU", "GPUS", "ModelShape", "Plan", "PlanInput", "apply_auto_fit", "capacity_gib", "check_generation_reserve", "estimate",
    "fits", "gpu_by_name", "known_shape", "model_shape_from_config_dict", "plan_config", "plan_input",
    "read_model_shape", "resolve_gpu", "suggest",
]

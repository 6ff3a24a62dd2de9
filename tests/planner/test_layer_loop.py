"""model.layer_loop in the plan: the loop's extra layers cost activations (and a per-pass LoRA
its adapter), never base weights."""

import copy

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.planner import gpu_by_name, plan_config
from tifa_lite.planner.layer_loop import compute_factor, extra_layers

SFT = {"model": {"name_or_path": "Qwen/Qwen2.5-7B-Instruct"}, "data": {"max_length": 1024},
       "train": {"per_device_batch_size": 2, "precision": "bf16"}}
LOOP = ["model.layer_loop.start=10", "model.layer_loop.end=20", "model.layer_loop.repeats=2"]


def plan(*overrides):
    return plan_config(load_recipe(copy.deepcopy(SFT), list(overrides)), gpu_by_name("a10"))


def test_extra_depth_and_compute():
    config = load_recipe(copy.deepcopy(SFT), LOOP)
    assert extra_layers(config.model.layer_loop) == 10 and extra_layers(None) == 0
    assert compute_factor(28, config.model.layer_loop) == pytest.approx(38 / 28)


@pytest.mark.parametrize("per_pass", [True, False])
def test_loop_grows_activations_not_weights(per_pass):
    flat = plan()
    looped = plan(*LOOP, f"model.layer_loop.lora_per_pass={str(per_pass).lower()}")
    layers = flat.inp.shape.layers  # 28 for Qwen2.5-7B
    assert looped.static["base weights"] == flat.static["base weights"]
    assert looped.train_phase["activations"] == pytest.approx(flat.train_phase["activations"] * (layers + 10) / layers)
    lora_ratio = looped.static["LoRA params + grads"] / flat.static["LoRA params + grads"]
    assert lora_ratio == pytest.approx((layers + 10) / layers if per_pass else 1.0, rel=1e-3)
    assert "38 layers computed" in looped.notes["activations"]

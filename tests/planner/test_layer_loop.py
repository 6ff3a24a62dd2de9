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


@pytest.mark.parametrize("per_pass", [True, False])
def test_dequantised_copy_is_counted_per_looped_slot(zoo_model_dir, per_pass):
    """A per-pass LoRA clones the looped layers' Linear4bit modules (sharing the 4-bit weights), and
    the dense copy is made per module: measured on the zoo's Llama, the plan counts what is made."""
    import torch
    from peft import get_peft_model

    from tifa_lite.modeling.dequantized import dequantized_base, linear4bit_layers
    from tifa_lite.modeling.load import load_model, lora_config
    from tifa_lite.planner import plan_config
    from tifa_lite.hardware import rehearsing
    from tifa_lite.planner.shapes import read_model_shape
    from tifa_lite.runplan import resolve_plan

    config = load_recipe({"model": {"name_or_path": str(zoo_model_dir("llama")), "source": "local",
                                    "layer_loop": {"start": 0, "end": 2, "repeats": 2, "lora_per_pass": per_pass}},
                          "quant": {"bits": 4}, "train": {"method": "grpo"},
                          "grpo": {"use_vllm": "off", "dequantize_for_generation": "on"}})
    with rehearsing("a10"):
        run_plan = resolve_plan(config)
    model = get_peft_model(load_model(config, run_plan), lora_config(config))
    with dequantized_base(model), torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7]]))
        copies = {layer.forward.args[1]["weight"].untyped_storage().data_ptr():
                  layer.forward.args[1]["weight"].untyped_storage().nbytes() for layer in linear4bit_layers(model)}
    planned = plan_config(config, gpu_by_name("a10"), read_model_shape(config.model))
    assert planned.generation_phase["dequantised base"] * 2**30 == pytest.approx(sum(copies.values()))
    assert len(copies) == (2 if per_pass else 1) * 7 * 2  # 7 linear layers x 2 layers, per pass

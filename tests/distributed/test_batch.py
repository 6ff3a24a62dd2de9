"""The global-batch rule: micro × accumulation × world size = global batch, exactly."""

from pathlib import Path

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.distributed.batch import apply_batch_rule, plan_batch
from tifa_lite.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize(
    "global_batch, world, micro, expected_micro, expected_accum",
    [
        (16, 1, 2, 2, 8),      # one GPU: the recipe as written
        (16, 16, 4, 1, 1),     # 2×8 H100, small global batch: micro lowered to 1
        (128, 16, 4, 4, 2),    # 2×8 H100: 4 × 2 × 16
        (96, 16, 4, 3, 2),     # 6 per rank: the largest divisor of 6 not above 4 is 3
        (16, 2, 4, 4, 2),      # CPU rehearsal: 2 "nodes"
        (14, 2, 4, 1, 7),      # 7 per rank is prime: micro 1, accumulation 7
    ],
)
def test_plan_keeps_the_global_batch(global_batch, world, micro, expected_micro, expected_accum):
    plan = plan_batch(global_batch, world, micro)
    assert (plan.micro_batch, plan.grad_accum) == (expected_micro, expected_accum)
    assert plan.micro_batch * plan.grad_accum * plan.world_size == global_batch
    assert plan.lowered == (expected_micro != micro)


def test_describe_states_the_rule():
    text = plan_batch(16, 16, 4).describe()
    assert "global batch 16 = micro-batch 1 × gradient accumulation 1 × world size 16" in text
    assert "lowered from 4" in text


def test_global_batch_not_multiple_of_world_size_is_an_error():
    with pytest.raises(ConfigError, match=r"global_batch_size=20 is not a multiple of the world size 16.*16 or 32"):
        plan_batch(20, 16, 4)
    with pytest.raises(ConfigError, match="not a multiple of the world size 16"):
        plan_batch(8, 16, 1)


def test_recipe_without_global_batch_keeps_its_single_device_product():
    config = load_recipe({"train": {"per_device_batch_size": 2, "gradient_accumulation_steps": 8}})
    resolved, plan = apply_batch_rule(config)
    assert plan.global_batch == 16
    assert (resolved.train.per_device_batch_size, resolved.train.gradient_accumulation_steps) == (2, 8)
    assert resolved.train.global_batch_size == 16
    # The input config is not modified.
    assert config.train.global_batch_size is None


def test_scale_profile_keeps_the_recipes_global_batch():
    recipe = RECIPES / "sft_qlora_roleplay.yaml"
    single = load_recipe(recipe)
    scaled = load_recipe(recipe, ["train.global_batch_size=128"], profile="h100x16_zero3")
    resolved, plan = apply_batch_rule(scaled)
    assert (resolved.train.per_device_batch_size, resolved.train.gradient_accumulation_steps) == (4, 2)
    assert plan.global_batch == 128
    # Same recipe on one GPU: the recipe's own split, same global batch rule.
    one, _ = apply_batch_rule(single)
    assert one.train.per_device_batch_size * one.train.gradient_accumulation_steps == one.train.global_batch_size


def test_rule_is_idempotent():
    config = load_recipe(RECIPES / "sft_qlora_roleplay.yaml", profile="h100x16_zero3")
    once, _ = apply_batch_rule(config)
    twice, _ = apply_batch_rule(load_recipe(once))
    assert once.train == twice.train


def test_grpo_global_batch_must_hold_whole_groups():
    config = load_recipe({
        "train": {"method": "grpo", "global_batch_size": 12},
        "grpo": {"num_generations": 8},
        "quant": {"bits": None}, "lora": {"enabled": False},
    })
    with pytest.raises(ConfigError, match="multiple of grpo.num_generations=8"):
        apply_batch_rule(config)
    ok = config.model_copy(update={"train": config.train.model_copy(update={"global_batch_size": 16})})
    assert apply_batch_rule(ok)[1].global_batch == 16

"""Profiles change keys only: the same recipe resolves to QLoRA on one GPU and to
full-parameter ZeRO-3 on 2×8 H100, for SFT, DPO and GRPO recipes alike."""

from pathlib import Path

import pytest

from tifa_lite.cli import main
from tifa_lite.config import load_recipe
from tifa_lite.distributed.batch import apply_batch_rule
from tifa_lite.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ALL_RECIPES = sorted(RECIPES.glob("*.yaml"))


def test_single_gpu_profile_is_qlora():
    config = load_recipe(RECIPES / "sft_qlora_roleplay.yaml", profile="single_gpu")
    assert config.is_qlora and config.distributed.deepspeed is None and config.distributed.world_size == 1


def test_h100_profile_is_full_parameter_zero3():
    config = load_recipe(RECIPES / "sft_qlora_roleplay.yaml", profile="h100x16_zero3")
    assert config.quant.bits is None and not config.lora.enabled
    assert config.train.precision == "bf16" and config.train.gradient_checkpointing
    assert config.distributed.zero_stage == 3 and config.distributed.save_16bit_model
    assert (config.distributed.nnodes, config.distributed.nproc_per_node, config.distributed.world_size) == (2, 8, 16)
    # Everything the profile does not name is the recipe's.
    single = load_recipe(RECIPES / "sft_qlora_roleplay.yaml")
    assert config.data == single.data and config.sampling == single.sampling
    assert config.train.global_batch_size == single.train.global_batch_size


def test_single_gpu_switches_a_scale_recipe_back():
    config = load_recipe(RECIPES / "sft_qlora_roleplay.yaml", profile=["h100x16_zero3", "single_gpu"])
    assert config.is_qlora and config.distributed.zero_stage is None


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.stem)
def test_every_recipe_resolves_under_the_scale_profile(recipe):
    """Each recipe either keeps its global batch on 16 GPUs exactly, or — when that batch is
    not a multiple of 16 (CPU-sized recipes) — is refused with the key to change."""
    config = load_recipe(recipe, profile="h100x16_zero3")
    global_batch = config.train.global_batch_size or (
        config.train.per_device_batch_size * config.train.gradient_accumulation_steps
    )
    if global_batch % 16:
        with pytest.raises(ConfigError, match=f"global_batch_size={global_batch} is not a multiple of the world size"):
            apply_batch_rule(config)
        config = load_recipe(recipe, [f"train.global_batch_size={global_batch - global_batch % 16 + 16}"],
                             profile="h100x16_zero3")
    resolved, plan = apply_batch_rule(config)
    t = resolved.train
    assert t.per_device_batch_size * t.gradient_accumulation_steps * 16 == plan.global_batch
    assert resolved.distributed.zero_stage == 3 and not resolved.lora.enabled


def test_config_command_prints_the_resolved_batch(capsys):
    assert main(["config", str(RECIPES / "sft_qlora_roleplay.yaml"), "train.global_batch_size=128",
                 "--profile", "h100x16_zero3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# batch: global batch 128 = micro-batch 4 × gradient accumulation 2 × world size 16")
    assert "per_device_batch_size: 4" in out and "gradient_accumulation_steps: 2" in out


def test_qlora_ddp_profile_is_the_recipe_on_n_gpus_of_one_node():
    recipe = RECIPES / "sft_qlora_roleplay.yaml"
    single, ddp = load_recipe(recipe), load_recipe(recipe, profile="qlora_ddp")
    assert ddp.is_qlora and ddp.distributed.deepspeed is None and ddp.distributed.zero_stage is None
    assert (ddp.distributed.nnodes, ddp.distributed.nproc_per_node, ddp.distributed.world_size) == (1, 8, 8)
    assert (ddp.data, ddp.train, ddp.lora, ddp.quant) == (single.data, single.train, single.lora, single.quant)
    # N is whatever the launch says; the recipe's global batch (16) is kept.
    four = load_recipe(recipe, ["distributed.nproc_per_node=4"], profile="qlora_ddp")
    resolved, plan = apply_batch_rule(four)
    assert (plan.world_size, plan.micro_batch, plan.grad_accum, plan.global_batch) == (4, 2, 2, 16)
    # Stacked after the scale profile it switches the recipe back to QLoRA on one node.
    back = load_recipe(recipe, profile=["h100x16_zero3", "qlora_ddp"])
    assert back.is_qlora and back.distributed.deepspeed is None and back.distributed.world_size == 8

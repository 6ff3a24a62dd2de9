"""What a rank checks before training: world size against the config, the DeepSpeed JSON
against the recipe's keys, and the TrainingArguments keys handed to the trainer."""

import json
from pathlib import Path

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.distributed import runtime
from tifa_lite.distributed.runtime import (
    check_deepspeed_config, effective_deepspeed_config, prepare_distributed, training_arguments_kwargs,
)
from tifa_lite.errors import ConfigError

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "sft_qlora_roleplay.yaml"


def test_single_process_recipe_only_gets_the_batch_rule(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = prepare_distributed(load_recipe(RECIPE))
    assert config.train.per_device_batch_size * config.train.gradient_accumulation_steps == 16
    assert training_arguments_kwargs(config) == {}


def test_scale_profile_outside_a_launcher_is_an_error(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=r"written for 16 processes .* single process.*tifa-lite launch"):
        prepare_distributed(load_recipe(RECIPE, profile="h100x16_zero3"))


def test_deepspeed_outside_a_launcher_is_an_error(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = load_recipe(RECIPE, ["distributed.nnodes=1", "distributed.nproc_per_node=1", "distributed.world_size=1"],
                         profile=["h100x16_zero3", "zero2"])
    with pytest.raises(ConfigError, match="needs a launcher .* --nnodes 1 --nproc-per-node 1"):
        prepare_distributed(config)


def test_launcher_world_must_match_the_config(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match=r"world of 4 processes .* distributed.world_size=16"):
        prepare_distributed(load_recipe(RECIPE, profile="h100x16_zero3"))


def test_deepspeed_json_must_agree_with_the_recipe(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    config = load_recipe(RECIPE, [f"distributed.deepspeed={ds}"], profile="h100x16_zero3")
    with pytest.raises(ConfigError, match="zero_stage=3 but .*ds.json sets zero_optimization.stage=2"):
        check_deepspeed_config(config)
    ds.write_text('{"zero_optimization": {"stage": 3,}')
    with pytest.raises(ConfigError, match=r"ds.json:1: not valid JSON"):
        check_deepspeed_config(config)


def test_shipped_deepspeed_jsons():
    config = load_recipe(RECIPE, profile="h100x16_zero3")
    zero3 = check_deepspeed_config(config)
    z = zero3["zero_optimization"]
    assert z["stage"] == 3 and "stage3_gather_16bit_weights_on_model_save" not in z  # the recipe key decides
    assert z["offload_optimizer"]["device"] == "none" and z["offload_param"]["device"] == "none"
    # Batch sizes, clipping and precision are left to the trainer ("auto"), so the recipe decides them.
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert zero3[key] == "auto"
    assert zero3["bf16"]["enabled"] == "auto"
    zero2 = check_deepspeed_config(load_recipe(RECIPE, profile=["h100x16_zero3", "zero2"]))
    assert zero2["zero_optimization"]["stage"] == 2


@pytest.mark.parametrize("save", [True, False])
def test_save_16bit_model_sets_the_zero3_gather(save):
    config = load_recipe(RECIPE, [f"distributed.save_16bit_model={str(save).lower()}"], profile="h100x16_zero3")
    ds = effective_deepspeed_config(config)
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is save
    assert check_deepspeed_config(config)["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save") is None


def test_save_16bit_model_false_is_refused_where_weights_are_whole(tmp_path):
    with pytest.raises(ConfigError, match="save_16bit_model=false, but .*zero2.json sets ZeRO stage 2"):
        check_deepspeed_config(load_recipe(RECIPE, ["distributed.save_16bit_model=false"],
                                           profile=["h100x16_zero3", "zero2"]))
    with pytest.raises(ConfigError, match="save_16bit_model=false, but this run has no distributed.deepspeed"):
        check_deepspeed_config(load_recipe(RECIPE, ["distributed.save_16bit_model=false"]))


def test_a_zero3_json_may_not_contradict_save_16bit_model(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}}))
    agree = load_recipe(RECIPE, [f"distributed.deepspeed={ds}"], profile="h100x16_zero3")
    assert effective_deepspeed_config(agree)["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    differ = load_recipe(RECIPE, [f"distributed.deepspeed={ds}", "distributed.save_16bit_model=false"],
                         profile="h100x16_zero3")
    with pytest.raises(ConfigError, match="save_16bit_model=false but .*ds.json sets zero_optimization"
                                          ".stage3_gather_16bit_weights_on_model_save=true. The recipe key decides"):
        check_deepspeed_config(differ)


def test_zero_stage_without_json_is_an_error():
    config = load_recipe(RECIPE, ["distributed.zero_stage=2"])
    with pytest.raises(ConfigError, match="without distributed.deepspeed"):
        check_deepspeed_config(config)


def test_training_arguments_kwargs(monkeypatch):
    config = load_recipe(RECIPE, profile="h100x16_zero3")
    monkeypatch.setattr(runtime, "_state_ready", False)
    kwargs = training_arguments_kwargs(config)
    assert kwargs["deepspeed"] == effective_deepspeed_config(config)
    assert kwargs["ddp_timeout"] == 1800 and "accelerator_config" not in kwargs
    monkeypatch.setattr(runtime, "_state_ready", True)
    assert training_arguments_kwargs(config)["accelerator_config"] == {"use_configured_state": True}
    # Plain DDP under a launcher uses the process group prepare_distributed brought up, too.
    ddp = load_recipe(RECIPE, profile="qlora_ddp")
    assert training_arguments_kwargs(ddp) == {"accelerator_config": {"use_configured_state": True}, "ddp_timeout": 1800}


def test_world_size_follows_the_sizes_unless_a_profile_pins_it():
    ddp = load_recipe(RECIPE, ["distributed.nproc_per_node=4"], profile="qlora_ddp")
    assert ddp.distributed.world_size == 4
    with pytest.raises(ConfigError, match="world_size=16 but nnodes × nproc_per_node = 1 × 4"):
        load_recipe(RECIPE, ["distributed.nnodes=1", "distributed.nproc_per_node=4"], profile="h100x16_zero3")

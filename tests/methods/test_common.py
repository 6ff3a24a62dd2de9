import pytest

from tifa_lite.config import load_recipe
from tifa_lite.methods.common import Run, make_config
from tifa_lite.runplan import resolve_plan


def run_for(config, tmp_path):
    return Run(config=config, work_dir=tmp_path, model=None, tokenizer=None, peft_config=None, plan=resolve_plan(config))


def test_warmup_ratio_reaches_the_trainer(tmp_path):
    from trl import SFTConfig

    args = make_config(SFTConfig, run_for(load_recipe({}, ["train.warmup_ratio=0.1"]), tmp_path))
    assert args.warmup_steps == 0.1
    assert args.get_warmup_steps(100) == 10


def test_unknown_setting_is_an_error_not_a_silent_drop(tmp_path):
    from trl import SFTConfig

    with pytest.raises(TypeError, match="no_such_setting"):
        make_config(SFTConfig, run_for(load_recipe({}), tmp_path), no_such_setting=1)


def test_trainer_config_errors_become_config_errors(tmp_path):
    from trl import SFTConfig

    from tifa_lite.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^the recipe's train.\* keys: trl.SFTConfig refused these settings: cosnie"):
        make_config(SFTConfig, run_for(load_recipe({}, ["train.lr_scheduler=cosnie"]), tmp_path))


def test_use_vllm_accepts_unquoted_yaml_switches():
    grpo = {"train": {"method": "grpo"}}
    assert load_recipe(grpo, ["grpo.use_vllm=off"]).grpo.use_vllm == "off"
    assert load_recipe(grpo, ["grpo.use_vllm=on"]).grpo.use_vllm == "on"


def test_ddp_with_lora_does_not_search_for_unused_parameters(tmp_path):
    """transformers sets find_unused_parameters=True for a PeftModel (an extra autograd traversal
    each step under DDP); every LoRA weight is used in each forward, so a LoRA run turns it off."""
    from tifa_lite.methods.common import training_kwargs

    ddp = load_recipe({}, ["distributed.nproc_per_node=2"])
    assert training_kwargs(run_for(ddp, tmp_path))["ddp_find_unused_parameters"] is False
    full = load_recipe({}, ["distributed.nproc_per_node=2", "quant.bits=null", "lora.enabled=false"])
    assert "ddp_find_unused_parameters" not in training_kwargs(run_for(full, tmp_path))
    assert "ddp_find_unused_parameters" not in training_kwargs(run_for(load_recipe({}), tmp_path))

"""Suggestions and train.auto_fit: what changes, what is printed, and that the result fits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.planner import apply_auto_fit, capacity_gib, fits, gpu_by_name, plan_config, suggest

BIG_SFT = {
    "model": {"name_or_path": "Qwen/Qwen2.5-7B-Instruct"},
    "quant": {"bits": 4},
    "lora": {"r": 16},
    "data": {"max_length": 4096},
    "train": {"per_device_batch_size": 8, "gradient_accumulation_steps": 2, "precision": "bf16"},
}


def t4_hardware():
    return SimpleNamespace(device="cuda", gpu_name="Tesla T4", bf16=False, gpu_count=1, total_memory_gib=14.74)


def test_t4_plan_switches_to_fp16_and_fits_keeping_the_global_batch():
    config = load_recipe(BIG_SFT)
    gpu = gpu_by_name("t4")
    assert not fits(plan_config(config, gpu), gpu)
    fitted, changes, plan = suggest(config, gpu)
    keys = [c.key for c in changes]
    assert keys[0] == "train.precision" and changes[0].new == "fp16"
    assert "train.gradient_checkpointing" in keys
    assert fits(plan, gpu) and plan.peak_gib <= capacity_gib(gpu)
    assert plan.inp.precision == "fp16"
    t = fitted.train
    assert t.per_device_batch_size * t.gradient_accumulation_steps == 16  # global batch unchanged
    assert config.train.per_device_batch_size == 8  # the input config is not mutated


def test_a_recipe_that_fits_is_left_alone():
    config = load_recipe({"model": {"name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}, "data": {"max_length": 512},
                          "train": {"per_device_batch_size": 2}})
    fitted, changes, plan = suggest(config, gpu_by_name("a10"))
    assert changes == [] and fits(plan, gpu_by_name("a10"))


def test_full_finetune_that_cannot_fit_gets_advice_not_silent_model_changes():
    config = load_recipe({"model": {"name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}, "quant": {"bits": None},
                          "lora": {"enabled": False}, "data": {"max_length": 1024}})
    fitted, changes, plan = suggest(config, gpu_by_name("t4"))
    assert any(c.key == "train.optim" and c.new == "paged_adamw_8bit" for c in changes)
    advice = [c for c in changes if not c.applied]
    assert advice and advice[-1].key == "lora.enabled"
    assert fitted.lora.enabled is False  # advice is never applied
    assert not fits(plan, gpu_by_name("t4"))


def test_grpo_shortens_rollouts_rather_than_rows():
    config = load_recipe({"model": {"name_or_path": "Qwen/Qwen2.5-7B-Instruct"}, "quant": {"bits": 4},
                          "train": {"method": "grpo", "per_device_batch_size": 16, "gradient_accumulation_steps": 4},
                          "grpo": {"num_generations": 16, "max_completion_length": 2048, "use_vllm": "off"}})
    fitted, changes, plan = suggest(config, gpu_by_name("t4"))
    assert fits(plan, gpu_by_name("t4"))
    assert all(c.key != "data.max_length" for c in changes)
    # Rows generated per step stay a multiple of num_generations.
    assert (fitted.train.per_device_batch_size * fitted.train.gradient_accumulation_steps) % 16 == 0


def test_mgrpo_plans_for_its_second_group_in_each_micro_batch():
    from tifa_lite.planner.fit import plan_input

    recipe = {"model": {"name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}, "train": {"method": "grpo", "per_device_batch_size": 4},
              "grpo": {"num_generations": 4, "max_prompt_length": 256, "max_completion_length": 200, "use_vllm": "off"}}
    one = plan_input(load_recipe(recipe), gpu_by_name("t4"))
    two = plan_input(load_recipe(recipe, {"grpo.passes": 2}), gpu_by_name("t4"))
    assert (one.batch, one.seq_len) == (4, 456)
    assert (two.batch, two.seq_len) == (8, 656)  # the revision prompt carries the first answer


def test_apply_auto_fit_prints_each_change(capsys):
    config = load_recipe({**BIG_SFT, "train": {**BIG_SFT["train"], "auto_fit": True}})
    fitted = apply_auto_fit(config, t4_hardware())
    out = capsys.readouterr().out
    assert "auto_fit: train.precision: 'bf16' -> 'fp16'" in out
    assert "train.per_device_batch_size" in out and "planned peak" in out
    assert fitted.train.precision == "fp16" and fitted.train.gradient_checkpointing
    assert type(fitted) is type(config)


def test_apply_auto_fit_uses_hardware_gpu_over_detection(capsys):
    config = load_recipe({**BIG_SFT, "hardware": {"gpu": "a100-80g"}})
    fitted = apply_auto_fit(config, t4_hardware())
    out = capsys.readouterr().out
    assert "NVIDIA A100 80 GB" in out and "T4" not in out
    assert fitted.train.precision == "bf16"  # the A100 has bf16, the detected T4 is ignored
    assert fitted.train.per_device_batch_size == 8  # checkpointing alone fits 80 GB


def test_apply_auto_fit_on_the_cpu_changes_nothing(capsys):
    config = load_recipe({"model": {"name_or_path": "smollm2-135m-instruct"}})
    cpu = SimpleNamespace(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)
    assert apply_auto_fit(config, cpu) == config
    assert "no GPU" in capsys.readouterr().out


def test_unknown_gpu_name_is_a_config_error():
    config = load_recipe({"hardware": {"gpu": "t5"}})
    with pytest.raises(ConfigError, match="known"):
        apply_auto_fit(config, t4_hardware())

"""Suggestions and train.auto_fit: what changes, what is printed, and that the result fits."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.planner import (
    apply_auto_fit, capacity_gib, check_generation_reserve, fits, gpu_by_name, plan_config, suggest,
)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

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


def test_a_forced_dense_generation_copy_is_the_first_thing_dropped_when_grpo_does_not_fit():
    recipe = {"model": {"name_or_path": "Qwen/Qwen2.5-7B-Instruct"}, "quant": {"bits": 4},
              "train": {"method": "grpo", "per_device_batch_size": 8, "gradient_accumulation_steps": 1,
                        "gradient_checkpointing": True},
              "grpo": {"num_generations": 8, "max_completion_length": 256, "use_vllm": "off",
                       "dequantize_for_generation": "on"}}
    config = load_recipe(recipe)
    t4 = gpu_by_name("t4")
    forced = plan_config(config, t4)
    assert forced.generation_phase["dequantised base"] > 10  # a 7B model's linear weights in fp16
    assert not fits(forced, t4)
    fitted, changes, plan = suggest(config, t4)
    # dropping the copy changes no result, so it comes before every other move, and here it is enough
    assert [(c.key, c.new) for c in changes] == [("grpo.dequantize_for_generation", "off")]
    assert fits(plan, t4) and "dequantised base" not in plan.generation_phase


def test_when_generation_is_the_peak_the_fit_generates_fewer_micro_batches_per_call():
    """Halving the micro-batch keeps the rows of a step, so it leaves the rollout's KV cache as it
    is; generating fewer micro-batches per call shrinks it with the same on-policy samples."""
    from tifa_lite.planner.fit import generation_rows, plan_input

    recipe = {"model": {"name_or_path": "Qwen/Qwen2.5-7B-Instruct"}, "quant": {"bits": 4},
              "train": {"method": "grpo", "per_device_batch_size": 4, "gradient_accumulation_steps": 16,
                        "gradient_checkpointing": True},
              "grpo": {"num_generations": 4, "max_prompt_length": 512, "max_completion_length": 1536,
                       "use_vllm": "off"}}
    config = load_recipe(recipe)
    t4 = gpu_by_name("t4")
    assert generation_rows(config) == 64 and plan_input(config, t4).generation_batch == 64
    before = plan_config(config, t4)
    assert before.phase == "generation" and not fits(before, t4)
    fitted, changes, plan = suggest(config, t4)
    assert changes and all(c.key == "grpo.steps_per_generation" for c in changes)
    assert [c.new for c in changes] == [8, 4, 2, 1][:len(changes)]
    assert fits(plan, t4)
    assert fitted.grpo.max_completion_length == 1536  # the rollouts keep their length
    assert fitted.train.per_device_batch_size * fitted.train.gradient_accumulation_steps == 64  # and the step its rows
    assert plan.inp.generation_batch == 4 * fitted.grpo.steps_per_generation


def test_generation_rows_read_trl_args_generation_batch_size():
    from tifa_lite.planner.fit import generation_rows

    config = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 4, "gradient_accumulation_steps": 4},
                          "grpo": {"num_generations": 4, "trl_args": {"generation_batch_size": 8}}})
    assert generation_rows(config) == 8
    config = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 4, "gradient_accumulation_steps": 4},
                          "grpo": {"num_generations": 4, "steps_per_generation": 2}})
    assert generation_rows(config) == 8


def _full_7b_grpo_on_detected_h100(fake_cuda, monkeypatch, *overrides):
    from tifa_lite.hardware import detect
    from tifa_lite.runplan import generation

    fake_cuda(capability=(9, 0), name="NVIDIA H100 80GB HBM3", memory_gib=79.11)
    monkeypatch.setattr(generation, "vllm_importable", lambda: True)
    config = load_recipe(RECIPES / "grpo_qwen2.5-0.5b_gsm8k.yaml",
                         ["model.name_or_path=Qwen/Qwen2.5-7B-Instruct", *overrides])
    return config, detect()


def test_vllm_reserve_refuses_weights_plus_one_sequence_it_cannot_hold(fake_cuda, monkeypatch):
    # 0.2 x 79.1 GiB = 15.8 GiB for vLLM: the 7B's 14.2 GiB of bf16 weights leave 1.6 GiB, short of the
    # 1.75 GiB KV cache of one 32k-token sequence (the context vLLM reserves when not told a shorter one).
    config, hardware = _full_7b_grpo_on_detected_h100(fake_cuda, monkeypatch, "grpo.max_completion_length=32512")
    with pytest.raises(ConfigError, match=r"grpo.vllm_gpu_memory_utilization=0.2 x 79.1 GiB = 15.82 GiB.*"
                                          r"weights \(14.19 GiB\).*32768-token sequence \(1.75 GiB\).*refuses to start"):
        check_generation_reserve(config, hardware)
    assert not fits(plan_config(config, gpu_by_name("h100")), gpu_by_name("h100"))


def test_vllm_reserve_holds_the_recipe_budget(fake_cuda, monkeypatch, caplog):
    config, hardware = _full_7b_grpo_on_detected_h100(fake_cuda, monkeypatch)
    check_generation_reserve(config, hardware)  # 456 tokens: 24 MiB of KV per row, 32 rows fit
    assert "vLLM queues" not in caplog.text
    # 4k-token rollouts: one fits, 32 rows do not; vLLM queues them (slower, not an error).
    config, hardware = _full_7b_grpo_on_detected_h100(fake_cuda, monkeypatch, "grpo.max_completion_length=4096")
    check_generation_reserve(config, hardware)
    assert "KV cache of 7 of the 32 rows generated per call (0.23 GiB each): vLLM queues the rest" in caplog.text


def test_t4_fp32_norms_count_an_fp32_kv_cache():
    # The example: with fp32 norms k/v leave their 4-bit projections in fp32, so 32 rows x 456 tokens of
    # a Llama-2-7B shape take 2 x 32 layers x 4096 x 4 bytes x 32 x 456 = 14.25 GiB, not 7.1: no T4 holds it.
    config = load_recipe(RECIPES / "grpo_qlora_t4.yaml", ["model.name_or_path=meta-llama/Llama-2-7b-hf"])
    t4, a10 = gpu_by_name("t4"), gpu_by_name("a10")
    plan = plan_config(config, t4)
    assert plan.generation_phase["generation KV cache"] == pytest.approx(2 * 32 * 4096 * 4 * 32 * 456 / 2**30)
    assert not fits(plan, t4)
    # bf16 on an A10: no fp32 norms, a 16-bit cache
    bf16 = load_recipe(RECIPES / "grpo_qlora_t4.yaml", ["model.name_or_path=meta-llama/Llama-2-7b-hf",
                                                         "train.precision=bf16", "quant.compute_dtype=bf16"])
    assert plan_config(bf16, a10).generation_phase["generation KV cache"] == pytest.approx(
        plan.generation_phase["generation KV cache"] / 2)

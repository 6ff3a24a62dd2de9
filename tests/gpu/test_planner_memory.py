"""The planner's predicted peak against torch.cuda.max_memory_allocated() for QLoRA SFT,
LoRA SFT and QLoRA GRPO at two sequence lengths each; target within ±15%.

SFT rows are packed (every row exactly data.max_length tokens, what the planner assumes);
GRPO's grpo.max_prompt_length is set to the longest prompt of the rows it trains on, so
the planner's prompt length is the padded one TRL generates from."""

from __future__ import annotations

import gc

import pytest
import torch

from tifa_lite.config import load_recipe
from tifa_lite.training.runner import train

from . import support

pytestmark = [*support.pytestmark, support.requires_real_cuda]
TARGET = 0.15
GIB = 2**30

CASES = {
    "qlora-sft": ("sft_qlora_roleplay.yaml", {"quant.bits": 4}),
    "lora-sft": ("sft_qlora_roleplay.yaml", {"quant.bits": None}),
    "qlora-grpo": ("grpo_qlora_a10.yaml", {"quant.bits": 4}),
}


def _overrides(case: str, model_dir, out, length: int) -> tuple[str, dict]:
    recipe, extra = CASES[case]
    common = {"model.name_or_path": str(model_dir), "train.output_dir": str(out), "train.max_steps": 2,
              "train.overwrite_output_dir": True, "train.resume": "never", "train.progress_bar": False,
              "train.auto_fit": False, "train.save_steps": 10_000, "train.precision": "auto",
              "quant.compute_dtype": "auto", "train.gradient_accumulation_steps": 1, "train.global_batch_size": None,
              "train.gradient_checkpointing": True, "lora.r": 16, "lora.alpha": 32, **extra}
    if case.endswith("sft"):
        return recipe, {**common, "data.path": str(support.DATA / "roleplay_sheldon_sample.jsonl"),
                        "data.max_length": length, "data.eval_ratio": 0.0, "train.packing": True,
                        "train.per_device_batch_size": 4}
    return recipe, {**common, "data.path": str(support.DATA / "arithmetic" / "train.jsonl"), "data.format": "gsm8k",
                    "data.limit": 8, "data.shuffle": False, "train.per_device_batch_size": 8,
                    "grpo.num_generations": 4, "grpo.max_completion_length": length, "grpo.use_vllm": "off"}


def _longest_prompt(config) -> int:
    from tifa_lite.data.gsm8k import load_prompt_rows, prompt_length
    from tifa_lite.modeling import load_tokenizer
    from tifa_lite.modeling.resolve import resolve_model

    tokenizer = load_tokenizer(config, resolve_model(config.model))
    return max(prompt_length(tokenizer, row["prompt"]) for row in load_prompt_rows(config, config.data.path,
                                                                                 limit=config.data.limit))


@pytest.mark.parametrize("case, length", [("qlora-sft", 512), ("qlora-sft", 2048), ("lora-sft", 512),
                                          ("lora-sft", 2048), ("qlora-grpo", 128), ("qlora-grpo", 512)])
def test_planned_peak_matches_the_allocator(gpu_model_dir, tmp_path, case, length):
    from tifa_lite.hardware import detect
    from tifa_lite.planner import plan_config
    from tifa_lite.planner.hardware_catalog import gpu_from_detected

    recipe, overrides = _overrides(case, gpu_model_dir, tmp_path / "run", length)
    recipe = support.REPO / "recipes" / recipe
    if case.endswith("grpo"):
        overrides["grpo.max_prompt_length"] = _longest_prompt(load_recipe(recipe, overrides))
    config = load_recipe(recipe, overrides)
    hw = detect()
    plan = plan_config(config, gpu_from_detected(hw.gpu_name, hw.total_memory_gib, hw.bf16))

    gc.collect()  # what earlier tests left behind is not this run's
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    train(recipe, **overrides)
    measured = (torch.cuda.max_memory_allocated() - before) / GIB
    predicted = plan.allocator_peak_gib
    error = (predicted - measured) / measured
    support.Results.add(f"planner {case} len {length}", predicted_gib=round(predicted, 3),
                        measured_gib=round(measured, 3), error=f"{error:+.1%}", phase=plan.phase)
    assert abs(error) <= TARGET, f"planned {predicted:.3f} GiB vs measured {measured:.3f} GiB ({error:+.1%})"

"""Which dtype each part of a model trains in: the adapters after TRL built its trainer
(TRL 1.16 casts a quantised model's trainable weights to bf16), norms under fp16."""

from __future__ import annotations

import pytest
import torch

from tifa_lite.config import load_recipe
from tifa_lite.hardware import Hardware, adapter_dtype
from tifa_lite.methods import get_method
from tifa_lite.methods.common import Run
from tifa_lite.modeling import load_for_training
from tifa_lite.modeling.dtypes import keep_norms_fp32, settle_adapter_dtype, trainable_dtypes
from tifa_lite.runplan import resolve_plan

# The CPU rehearsing each card (TIFA_LITE_REHEARSE): the card's decisions, tensors on the CPU.
T4 = Hardware(device="cpu", gpu_name="Tesla T4", bf16=False, gpu_count=1, total_memory_gib=14.74, rehearsal="t4")
A10 = Hardware(device="cpu", gpu_name="NVIDIA A10", bf16=True, gpu_count=1, total_memory_gib=22.06, rehearsal="a10")


def qlora_run(tiny_model_dir, sample_data, tmp_path, recipe="recipes/sft_qlora_roleplay.yaml", **items):
    overrides = {"model.name_or_path": str(tiny_model_dir), "data.path": str(sample_data / "roleplay_sheldon_sample.jsonl"),
                 "data.limit": 4, "data.max_length": 384, "data.eval_ratio": 0.0, "train.max_steps": 1,
                 "train.per_device_batch_size": 2, "train.progress_bar": False, "train.gradient_checkpointing": False,
                 "train.output_dir": str(tmp_path / "out"), "lora.r": 4, "lora.alpha": 8, **items}
    config = load_recipe(recipe, overrides)
    model, tokenizer, peft_config = load_for_training(config)
    return Run(config=config, work_dir=tmp_path / "work", model=model, tokenizer=tokenizer,
               peft_config=peft_config, plan=resolve_plan(config))


def test_qlora_adapters_train_in_our_dtype_not_trls_bf16(tiny_model_dir, sample_data, tmp_path):
    run = qlora_run(tiny_model_dir, sample_data, tmp_path)
    trainer = get_method("sft").build_trainer(run)
    assert trainable_dtypes(trainer.model) == {"float32": sum(
        p.numel() for p in trainer.model.parameters() if p.requires_grad)}
    assert adapter_dtype(run.precision) == torch.float32


def test_reward_head_and_adapters_leave_bf16_under_fp16_compute(tiny_model_dir, sample_data, tmp_path):
    # What TRL hands back on a T4: every trainable weight (LoRA and the score head) in bf16.
    run = qlora_run(tiny_model_dir, sample_data, tmp_path, recipe="recipes/reward_qlora_hh.yaml",
                    **{"data.path": str(sample_data / "hh_rlhf_sample.jsonl")})
    from peft import get_peft_model

    model = get_peft_model(run.model, run.peft_config)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(torch.bfloat16)
    counts = settle_adapter_dtype(model, resolve_plan(run.config, hardware=T4).numerics.adapter_dtype)
    assert set(counts) == {"float32"}
    head = [p for n, p in model.named_parameters() if p.requires_grad and "score" in n]
    assert head and all(p.dtype == torch.float32 for p in head)


def test_full_fine_tuning_and_deepspeed_keep_their_dtypes(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    full_config = load_recipe({}, ["quant.bits=null", "lora.enabled=false"])
    assert resolve_plan(full_config, hardware=T4).numerics.adapter_dtype is None
    assert settle_adapter_dtype(full, None) is None
    assert {p.dtype for p in full.parameters()} == {torch.bfloat16}
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(full, LoraConfig(r=2, target_modules=["q_proj"]))
    assert settle_adapter_dtype(peft, None) is None  # what a DeepSpeed plan gives (tests/runplan)


def test_norms_go_to_fp32_under_fp16_and_embeddings_stay(tiny_model_dir):
    config = load_recipe({}, [f"model.name_or_path={tiny_model_dir}"])  # QLoRA NF4, LoRA on
    model, _, _ = load_for_training(config, resolve_plan(config, hardware=T4))
    norms = {n: p.dtype for n, p in model.named_parameters() if "norm" in n}
    assert norms and set(norms.values()) == {torch.float32}
    assert model.get_input_embeddings().weight.dtype == torch.float16
    assert model.get_output_embeddings().weight.dtype == torch.float16
    bf16, _, _ = load_for_training(config, resolve_plan(config, hardware=A10))
    assert {p.dtype for n, p in bf16.named_parameters() if "norm" in n} == {torch.bfloat16}


def test_keep_norms_counts_the_modules(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float16)
    assert keep_norms_fp32(model) == 2 * 2 + 1  # two per layer, and the final norm


@pytest.fixture(autouse=True)
def _quiet_precision_warnings(caplog):
    caplog.set_level("ERROR", logger="tifa_lite.hardware")

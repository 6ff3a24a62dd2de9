"""The promise of issue 5 on the real model: a QLoRA adapter trained by our SFT recipe
on the embedded SmolLM2, merged, generates exactly what base+adapter generates."""

from __future__ import annotations

import json

import pytest
import torch

import tifa_lite
from tifa_lite.config.loader import RECIPES_DIR

PROMPTS = ["Who are you?", "Tell me about your roommate."]


def _greedy(model, tokenizer, tokens=16):
    # Plain greedy on both sides, named explicitly: generate() fills unset fields from the model's
    # generation_config.json, and the merged one carries the recipe's repetition_penalty.
    plain = dict(max_new_tokens=tokens, do_sample=False, repetition_penalty=1.0,
                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    outs = []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **plain)
        outs.append(out[0, ids.shape[1]:].tolist())
    return outs


@pytest.mark.slow
def test_sft_qlora_adapter_merged_generates_like_base_plus_adapter(embedded_model_dir, sample_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tifa_lite.train(RECIPES_DIR / "sft_qlora_roleplay.yaml", **{
        "model.name_or_path": "smollm2-135m-instruct",
        "train.output_dir": str(tmp_path / "run"),
        "train.max_steps": 4,
        "train.per_device_batch_size": 2,
        "train.gradient_accumulation_steps": 1,
        "train.gradient_checkpointing": False,
        "train.learning_rate": 1e-3,
        "train.warmup_ratio": 0.0,  # four real updates; a warmup step would train at learning rate 0
        "train.global_batch_size": None,
        "train.save_steps": 100,
        "data.path": str(sample_data / "roleplay_sheldon_sample.jsonl"),
        "data.limit": 16,
        "data.eval_ratio": 0.0,
        "data.max_length": 256,
        "lora.r": 8,
        "lora.alpha": 16,
    })
    assert run.config.is_qlora

    report = tifa_lite.merge(run.output_dir, tmp_path / "merged", dtype="fp32")
    assert report["base_origin"] == "embedded:smollm2-135m-instruct"
    assert report["self_check"]["passed"] and not report["no_op"]
    assert report["self_check"]["max_logit_diff_merged_vs_base"] > 0
    assert report["self_check"]["greedy_agreement"] == 1.0

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(run.output_dir).chat_template
    gen = json.loads((tmp_path / "merged" / "generation_config.json").read_text())
    assert gen["temperature"] == run.config.sampling.temperature and gen["top_p"] == run.config.sampling.top_p

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    merged_out = _greedy(merged, tokenizer)
    del merged
    # A QLoRA run merges into dequant(NF4(W)) by default: the reference is the model it trained,
    # the 4-bit base plus the adapter (tifa_lite.merging.quantized_base).
    assert report["base_weights"] == "dequantized"
    from tifa_lite.merging.adapter import read_adapter
    from tifa_lite.merging.quantized_base import load_trained, trained_quant

    reference = load_trained(embedded_model_dir, run.output_dir, trained_quant(read_adapter(run.output_dir)))
    assert merged_out == _greedy(reference, tokenizer)

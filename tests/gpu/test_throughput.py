"""SFT throughput on the GPU: tifa_lite's train() against the plain TRL SFTTrainer script a
user would write, same model, data, QLoRA, precision, batch and checkpointing, side by
side in one run (each once; the order alternates over the two rounds)."""

from __future__ import annotations

import torch

from tifa_lite.hardware import resolve_precision, torch_dtype
from tifa_lite.training.runner import train

from . import support

pytestmark = support.pytestmark
ROWS, BATCH, LENGTH = 64, 8, 512


def _ours(model_dir, out) -> dict:
    import json

    result = train(support.REPO / "recipes" / "sft_qlora_roleplay.yaml", **support.sft_overrides(model_dir, out, **{
        "train.max_steps": -1, "train.num_epochs": 1, "data.limit": ROWS, "data.shuffle": False,
        "data.max_length": LENGTH, "train.per_device_batch_size": BATCH, "train.gradient_checkpointing": True,
        "train.precision": "auto", "quant.compute_dtype": "auto", "train.logging_steps": 1000}))
    report = json.loads((result.output_dir / "data_report.json").read_text())
    return {"tokens": report["train_tokens"], "runtime": result.metrics["train_runtime"], "steps": result.global_step}


def _plain_trl(model_dir, out) -> dict:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    precision = resolve_precision("auto")
    dtype = torch_dtype(precision)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, quantization_config=quant,
                                                 attn_implementation="sdpa",
                                                 device_map={"": 0} if support.CUDA else None)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = load_dataset("json", data_files=str(support.DATA / "roleplay_sheldon_sample.jsonl"), split="train")
    config = SFTConfig(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=BATCH,
                       learning_rate=5e-4, max_length=LENGTH, logging_steps=1000, save_strategy="no", report_to="none",
                       disable_tqdm=True, bf16=precision == "bf16", fp16=precision == "fp16", gradient_checkpointing=True)
    trainer = SFTTrainer(model=model, args=config, train_dataset=rows.select(range(ROWS)), processing_class=tokenizer,
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    metrics = trainer.train().metrics
    return {"tokens": tokens, "runtime": metrics["train_runtime"], "steps": trainer.state.global_step}


def test_sft_throughput_ours_vs_plain_trl(gpu_model_dir, tmp_path):
    runs = {"ours": [], "trl": []}
    for round_ in range(2):
        order = ("ours", "trl") if round_ == 0 else ("trl", "ours")
        for name in order:
            fn = _ours if name == "ours" else _plain_trl
            runs[name].append(fn(gpu_model_dir, tmp_path / f"{name}{round_}"))
    rate = {name: sum(r["tokens"] for r in rs) / sum(r["runtime"] for r in rs) for name, rs in runs.items()}
    ours, trl = runs["ours"][0], runs["trl"][0]
    assert ours["steps"] == trl["steps"] == ROWS // BATCH
    # Same rows; ours drops no row, and counts the tokens it trains on as TRL does (±10%: templates differ).
    assert abs(ours["tokens"] - trl["tokens"]) <= 0.1 * trl["tokens"], (ours["tokens"], trl["tokens"])
    support.Results.add("sft throughput", ours_tok_s=round(rate["ours"]), trl_tok_s=round(rate["trl"]),
                        ratio=f"{rate['ours'] / rate['trl']:.2f}x", rows=ROWS, batch=BATCH, max_length=LENGTH,
                        note="CPU DRY RUN: not a GPU figure" if support.DRY_RUN else "")

"""Real adapters for the merge tests, trained with PEFT directly on the tiny Llama:
a few optimizer steps at a high learning rate so every lora_B is non-zero."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def train_adapter(base_dir: Path, out: Path, *, qlora: bool = False, reward: bool = False, steps: int = 3,
                  **lora_kwargs) -> Path:
    """``reward=True``: a SEQ_CLS adapter with a trained one-logit score head (what
    train.method=reward saves), trained on a pairwise Bradley-Terry loss."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

    kwargs = {"dtype": torch.float32}
    if qlora:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
            bnb_4bit_quant_storage=torch.float32,
        )
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    if reward:
        model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1, **kwargs)
        model.config.pad_token_id = tokenizer.pad_token_id
        lora_kwargs.setdefault("task_type", "SEQ_CLS")
    else:
        model = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", **lora_kwargs)
    model = get_peft_model(model, config)
    batch = tokenizer(["The sea is wide and deep.", "Two plus two is four."], return_tensors="pt", padding=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(steps):
        if reward:  # the first text is the preferred one
            scores = model(**batch).logits.squeeze(-1)
            loss = -torch.nn.functional.logsigmoid(scores[0] - scores[1])
        else:
            loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def as_qlora_run(adapter: Path, base: Path, dest: Path, double_quant: bool = False) -> Path:
    """The adapter folder with the run files our trainer writes beside it (the fixture's
    adapters are trained with PEFT directly: NF4, fp32 compute, no double quant)."""
    shutil.copytree(adapter, dest)
    (dest / "resolved_config.yaml").write_text(
        f"model:\n  name_or_path: {base}\nquant:\n  bits: 4\n  quant_type: nf4\n  double_quant: {str(double_quant).lower()}\n"
        "  compute_dtype: auto\n", encoding="utf-8")
    (dest / "run_summary.json").write_text(json.dumps({"precision": "fp32"}), encoding="utf-8")
    return dest


@pytest.fixture(scope="session")
def lora_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return train_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "lora")


@pytest.fixture(scope="session")
def qlora_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return train_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "qlora", qlora=True)

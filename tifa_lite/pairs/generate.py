"""Sampling completions for the pair builders (plain ``model.generate``, batched with
left padding; vLLM is not needed at these sizes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class GenerationSettings:
    num_samples: int = 1
    max_new_tokens: int = 128
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    batch_size: int = 8
    seed: int = 0


def generate(model, tokenizer, prompts: list[list[dict[str, str]]], settings: GenerationSettings) -> list[list[str]]:
    """``num_samples`` completions (text, special tokens removed) for each prompt."""
    torch.manual_seed(settings.seed)
    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models continue from the last real token
    kwargs: dict[str, Any] = dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        num_return_sequences=settings.num_samples,
        repetition_penalty=settings.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id,
    )
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    per_batch = max(1, settings.batch_size // settings.num_samples)
    results: list[list[str]] = []
    try:
        for start in range(0, len(prompts), per_batch):
            chunk = prompts[start : start + per_batch]
            texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            for i in range(len(chunk)):
                results.append([t.strip() for t in decoded[i * settings.num_samples : (i + 1) * settings.num_samples]])
    finally:
        tokenizer.padding_side = padding_side
    return results

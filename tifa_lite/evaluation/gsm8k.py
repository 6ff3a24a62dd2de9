"""GSM8K accuracy: greedy decoding in batches, answer extraction that tolerates the
formats models actually produce (``<answer>…</answer>``, ``#### n``, else the last
number in the text), comparison after number normalisation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from tifa_lite.evaluation.greedy import plain_greedy
from tifa_lite.rewards.rule import extract_final_answer, normalize_number

log = logging.getLogger(__name__)


def extract_answer(text: str) -> str | None:
    """The model's final answer (``<answer>``, ``####``, else the last number), or None."""
    return extract_final_answer(text)


def is_correct(prediction: str | None, reference: str) -> bool:
    return prediction is not None and normalize_number(prediction) == normalize_number(reference)


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 256,
                    batch_size: int = 8) -> list[str]:
    """Left-padded batched plain greedy decoding of chat prompts (no penalty a merged
    folder's generation_config.json carries: :mod:`tifa_lite.evaluation.greedy`)."""
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models must see the prompt end right before generation
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            generated = model.generate(
                **enc, **plain_greedy(max_new_tokens, pad_token_id=tokenizer.pad_token_id), use_cache=True,
            )
            new_tokens = generated[:, enc["input_ids"].shape[1]:]
            outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return outputs


def evaluate_rows(model, tokenizer, rows: list[dict[str, Any]], max_new_tokens: int = 256,
                  batch_size: int = 8) -> dict[str, Any]:
    """``rows``: dicts with ``prompt`` (messages) and ``answer`` (the reference number)."""
    completions = generate_greedy(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens, batch_size)
    samples, correct = [], 0
    for row, completion in zip(rows, completions):
        prediction = extract_answer(completion)
        ok = is_correct(prediction, row["answer"])
        correct += ok
        samples.append({"answer": row["answer"], "prediction": prediction, "correct": ok, "completion": completion})
    n = len(rows)
    return {"accuracy": correct / n if n else 0.0, "n": n, "correct": correct, "samples": samples}


def load_eval_rows(data: str | Path | list[str], limit: int | None = None, system_prompt: str | None = None,
                   prompt_template: str | None = None, source: str = "auto", split: str = "test") -> list[dict]:
    """GSM8K rows → prompts, with the same system prompt GRPO trained with by default."""
    from tifa_lite.config.schema import RecipeConfig
    from tifa_lite.data.gsm8k import load_prompt_rows

    config = RecipeConfig(data={
        "path": str(data) if isinstance(data, Path) else data, "format": "gsm8k", "source": source,
        "split": split, "system_prompt": system_prompt, "prompt_template": prompt_template,
    })
    return load_prompt_rows(config, config.data.path, limit=limit)


def evaluate_gsm8k(model: str | Path | None, data: str | Path, adapter: str | Path | None = None, *,
                   limit: int | None = None, batch_size: int = 8, max_new_tokens: int = 256,
                   system_prompt: str | None = None, bits: int | None = None, precision: str = "auto",
                   source: str = "auto", split: str = "test", loaded: tuple | None = None) -> dict[str, Any]:
    """Accuracy of ``model`` (+ ``adapter``) on GSM8K-style ``data``. ``loaded`` =
    ``(model, tokenizer)`` skips loading (the CPU demo evaluates a model it holds)."""
    rows = load_eval_rows(data, limit=limit, system_prompt=system_prompt, source=source, split=split)
    if loaded is None:
        from tifa_lite.modeling.inference import load_inference_model

        lm, tokenizer, *_ = load_inference_model(model, adapter, bits=bits, precision=precision)
    else:
        lm, tokenizer = loaded
    was_training = lm.training
    lm.eval()
    try:
        result = evaluate_rows(lm, tokenizer, rows, max_new_tokens=max_new_tokens, batch_size=batch_size)
    finally:
        lm.train(was_training)
    log.info("GSM8K accuracy %.3f (%d/%d)", result["accuracy"], result["correct"], result["n"])
    return result

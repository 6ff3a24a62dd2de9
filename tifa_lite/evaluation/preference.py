"""Preference accuracy: the fraction of pairs where the model prefers ``chosen``.

* a policy with a LoRA adapter: DPO's implicit reward,
  ``[log π(c) − log π_base(c)] − [log π(r) − log π_base(r)] > 0``, the base being the same
  weights with the adapter disabled (one model in memory, as in training);
* a model without an adapter (or ``reference="none"``): ``log π(c) − log π(r) > 0``;
* a reward model (sequence-classification head, e.g. from ``train.method: reward``):
  ``score(prompt+c) − score(prompt+r) > 0``.

Ties count as wrong, as in TRL's ``rewards/accuracies``. The log-prob scoring is written
here rather than borrowed from DPOTrainer because the trainer always measures against a
reference and needs a training config; this needs neither.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from tifa_lite.errors import ConfigError
from tifa_lite.modeling.inference import load_inference_model

log = logging.getLogger(__name__)


def _ids(tokenizer, prompt, completion) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) the way TRL tokenises a pair: the completion starts
    where the prompt alone and prompt+completion stop agreeing."""
    if isinstance(prompt, list):
        p = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
        full = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=False)
    else:
        p = tokenizer(prompt)["input_ids"]
        text = prompt + completion
        full = tokenizer(text if text.endswith(tokenizer.eos_token) else text + tokenizer.eos_token)["input_ids"]
    start = 0
    while start < min(len(p), len(full)) and p[start] == full[start]:
        start += 1
    return full[:start], full[start:]


def _fit(prompt_ids: list[int], completion_ids: list[int], max_length: int) -> tuple[list[int], int]:
    """Truncate to max_length: keep the completion's start and the prompt's end."""
    completion_ids = completion_ids[:max_length - 1] if len(completion_ids) >= max_length else completion_ids
    keep = max_length - len(completion_ids)
    prompt_ids = prompt_ids[-keep:] if keep > 0 else []
    return prompt_ids + completion_ids, len(prompt_ids)


def _pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def completion_logps(model, tokenizer, items: list[tuple[list[int], int]], batch_size: int = 4,
                     length_normalize: bool = False) -> list[float]:
    """Sum (or mean) log-prob of each sequence's tokens after its prompt length."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ids, mask = _pad([s for s, _ in chunk], pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        for i, (seq, prompt_len) in enumerate(chunk):
            tokens = logp[i, max(prompt_len - 1, 0) : len(seq) - 1]
            out.append((tokens.mean() if length_normalize else tokens.sum()).item())
    return out


@torch.inference_mode()
def reward_scores(model, tokenizer, texts_ids: list[list[int]], batch_size: int = 4) -> list[float]:
    device = next(model.parameters()).device
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
    out: list[float] = []
    for start in range(0, len(texts_ids), batch_size):
        ids, mask = _pad(texts_ids[start : start + batch_size], pad_id, device)
        out.extend(model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist())
    return out


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def evaluate_preference(
    model,
    tokenizer,
    pairs: list[dict[str, Any]],
    *,
    reference: str = "auto",
    batch_size: int = 4,
    max_length: int = 1024,
    length_normalize: bool = False,
) -> dict[str, Any]:
    """Preference accuracy of ``model`` on normalised pairs (see :mod:`tifa_lite.data.preference`)."""
    if not pairs:
        raise ValueError("no pairs to evaluate")
    model.eval()
    is_reward = getattr(model.config, "num_labels", None) == 1 and "SequenceClassification" in type(
        model.get_base_model() if is_peft(model) else model).__name__
    chosen, rejected = [], []
    extra: dict[str, Any] = {}
    for pair in pairs:
        for side, bucket in (("chosen", chosen), ("rejected", rejected)):
            bucket.append(_fit(*_ids(tokenizer, pair["prompt"], pair[side]), max_length))
    if is_reward:
        kind = "reward_model"
        margins = [c - r for c, r in zip(
            reward_scores(model, tokenizer, [s for s, _ in chosen], batch_size),
            reward_scores(model, tokenizer, [s for s, _ in rejected], batch_size))]
    else:
        def margin_of(m):
            c = completion_logps(m, tokenizer, chosen, batch_size, length_normalize)
            r = completion_logps(m, tokenizer, rejected, batch_size, length_normalize)
            return [a - b for a, b in zip(c, r)]

        margins = margin_of(model)
        if reference == "auto" and is_peft(model):
            kind = "implicit_reward"
            with model.disable_adapter():
                base = margin_of(model)
            # The policy's own log p(c) > log p(r) comes for free here; reported beside the reward.
            extra["policy_logprob_accuracy"] = sum(m > 0 for m in margins) / len(margins)
            margins = [m - b for m, b in zip(margins, base)]
        elif reference in ("auto", "none"):
            kind = "logprob"
        else:
            raise ConfigError(f"reference={reference!r}: use auto or none.")
    wins = sum(m > 0 for m in margins)
    return {
        "accuracy": wins / len(margins),
        "n": len(margins),
        "ties": sum(m == 0 for m in margins),
        "mean_margin": sum(margins) / len(margins),
        "kind": kind,
        **extra,
    }


def _adapter_task(adapter: str | None) -> str | None:
    if adapter is None:
        return None
    cfg = Path(adapter).expanduser() / "adapter_config.json"
    if not cfg.is_file():
        raise ConfigError(f"--adapter {adapter}: no adapter_config.json, so this is not a LoRA adapter folder.")
    return json.loads(cfg.read_text(encoding="utf-8")).get("task_type")


def _is_reward_checkpoint(model: str | None) -> bool:
    if model is None or not (Path(model).expanduser() / "config.json").is_file():
        return False
    config = json.loads((Path(model).expanduser() / "config.json").read_text(encoding="utf-8"))
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def evaluate_preference_files(
    data: str | list[str],
    model: str | None = None,
    adapter: str | None = None,
    *,
    limit: int | None = None,
    on_error: str = "skip",
    bits: int | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Load the model (and adapter, or reward model) and score the pairs in ``data``."""
    from tifa_lite.data.preference import read_preference_pairs

    pairs = read_preference_pairs(data, on_error=on_error, key="--data").rows
    if limit is not None:
        pairs = pairs[:limit]
    if _adapter_task(adapter) == "SEQ_CLS" or _is_reward_checkpoint(model):
        lm, tokenizer, *_ = load_inference_model(model, adapter, bits=bits, reward_head=True)
    else:
        lm, tokenizer, *_ = load_inference_model(model if model or adapter else "smollm2-135m-instruct", adapter, bits=bits)
    return evaluate_preference(lm, tokenizer, pairs, **kwargs)

"""Role-play evaluation.

``perplexity``: how well a model predicts the character's own lines in held-out
conversations — the loss is taken on assistant tokens only, masked exactly as SFT
masks them (:func:`tifa_lite.data.tokenize.encode_conversation`), so the number is
comparable to the training loss and to the same model before training.

The LLM judge (``eval roleplay --judge``, ``eval roleplay-judge``) is
:mod:`tifa_lite.evaluation.roleplay_judge`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tifa_lite.errors import DataError

@dataclass
class PerplexityResult:
    ppl: float
    n: int  # conversations scored
    tokens: int  # assistant tokens scored
    nll: float  # mean negative log-likelihood per assistant token
    skipped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ppl": self.ppl, "n": self.n, "tokens": self.tokens, "nll": self.nll, "skipped": self.skipped}


def read_conversations(path: str | Path, limit: int | None = None) -> list[tuple[list[dict], str]]:
    """Messages/sharegpt/alpaca JSONL through the same readers training uses."""
    from tifa_lite.data.formats import detect_format, to_messages
    from tifa_lite.data.io import iter_records

    if not Path(path).expanduser().exists():
        raise DataError(f"--data {path}: no such file.")
    out = []
    for record in iter_records(str(path), key="--data"):
        if not isinstance(record.data, dict):
            raise DataError(f"{record.where}: expected a JSON object with 'messages'.")
        fmt = detect_format(record.data, record.where)
        out.append((to_messages(record.data, fmt, record.where), record.where))
        if limit and len(out) >= limit:
            break
    if not out:
        raise DataError(f"--data {path}: no conversations.")
    return out


def perplexity(
    model,
    tokenizer,
    conversations: list[tuple[list[dict], str]],
    max_length: int = 2048,
    batch_size: int = 4,
) -> PerplexityResult:
    import torch

    from tifa_lite.data.tokenize import IGNORE_INDEX, encode_conversation

    encoded, skipped = [], {}
    for messages, where in conversations:
        row = encode_conversation(tokenizer, messages, assistant_only=True, where=where)
        ids, mask = row["input_ids"], row["assistant_masks"]
        if len(ids) > max_length:
            # Keep the end: the character's (last) line is what is being scored.
            ids, mask = ids[-max_length:], mask[-max_length:]
        if not any(mask[1:]):
            skipped["no assistant tokens within max_length"] = skipped.get("no assistant tokens within max_length", 0) + 1
            continue
        encoded.append((ids, mask))
    if not encoded:
        raise DataError("no conversation has assistant tokens to score.")

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    # Longest first: batches of similar length waste less padding.
    encoded.sort(key=lambda pair: len(pair[0]), reverse=True)
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            for row, (ids, mask) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                labels[row, : len(ids)] = torch.tensor([t if m else IGNORE_INDEX for t, m in zip(ids, mask)])
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
            nll = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                ignore_index=IGNORE_INDEX, reduction="sum",
            )
            total_nll += float(nll)
            total_tokens += int((shift_labels != IGNORE_INDEX).sum())
    if was_training:
        model.train()
    mean = total_nll / total_tokens
    return PerplexityResult(ppl=math.exp(mean), n=len(encoded), tokens=total_tokens, nll=mean, skipped=skipped)

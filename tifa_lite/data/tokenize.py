"""Tokenisation with assistant-only loss masks, padding-free packing, and the row order
and padding of training batches.

Why by hand: TRL's ``assistant_only_loss`` needs ``{% generation %}`` markers in the
chat template, which most shipped templates (SmolLM2's, Qwen2.5's, ours when exported to
other runtimes) do not have. Rendering each assistant turn's prefix and mapping the
character span onto tokens with the fast tokenizer's offsets works with any
prefix-preserving template.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import torch

from tifa_lite.errors import DataError

IGNORE_INDEX = -100


def encode_conversation(tokenizer, messages: list[dict[str, str]], assistant_only: bool, where: str) -> dict[str, list[int]]:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    if assistant_only:
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
            upto = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
            start = len(prefix) if upto.startswith(prefix) else _reply_start(tokenizer, messages, index, prefix, upto)
            if start is None or not text.startswith(upto):
                raise DataError(
                    f"{where}: the chat template is not prefix-preserving (rendering the conversation up to "
                    f"turn {index} is not a prefix of the whole), so assistant tokens cannot be located. "
                    "Pick a named template (model.chat_template) or set train.assistant_only_loss=false."
                )
            spans.append((start, len(upto)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=assistant_only)
    input_ids = list(encoded["input_ids"])
    if not assistant_only:
        return {"input_ids": input_ids, "assistant_masks": [1] * len(input_ids)}
    mask = [0] * len(input_ids)
    span_index = 0
    for token_index, (start, end) in enumerate(encoded["offset_mapping"]):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index < len(spans) and end > spans[span_index][0] and start < spans[span_index][1]:
            mask[token_index] = 1
    return {"input_ids": input_ids, "assistant_masks": mask}


def _reply_start(tokenizer, messages, index: int, prefix: str, upto: str) -> int | None:
    """Where turn ``index`` starts when its text does not begin with the generation prompt:
    a reasoning template's prompt opens the think block (deepseek_r1: ``<｜Assistant｜><think>\\n``),
    which a history turn whose reasoning was stripped does not repeat. The reply then starts
    where its rendering leaves the generation prompt, never before the preceding turns."""
    before = tokenizer.apply_chat_template(messages[:index], tokenize=False)
    if not upto.startswith(before):
        return None
    return max(len(before), len(os.path.commonprefix([prefix, upto])))


def pack_sequences(sequences: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Best-fit-decreasing packing into rows of at most ``max_length`` tokens.

    Each row keeps its own position_ids restarting at 0 for every sequence, so
    transformers builds a block-diagonal causal mask per row (no attention across
    samples). Rows stay short (max_length), unlike TRL's padding-free collator, which
    flattens the whole batch into one row and pays attention over batch×length.
    """
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]["input_ids"]), reverse=True)
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        size = len(sequences[i]["input_ids"])
        best = -1
        for r, room in enumerate(free):
            if room >= size and (best < 0 or room < free[best]):
                best = r
        if best < 0:
            rows.append([i])
            free.append(max_length - size)
        else:
            rows[best].append(i)
            free[best] -= size
    packed = []
    for members in rows:
        ids: list[int] = []
        masks: list[int] = []
        positions: list[int] = []
        for i in members:
            seq = sequences[i]
            ids += seq["input_ids"]
            # The first token of each sample has no in-sample context to be predicted from.
            masks += [0] + seq["assistant_masks"][1:]
            positions += list(range(len(seq["input_ids"])))
        packed.append({"input_ids": ids, "assistant_masks": masks, "position_ids": positions})
    return packed


def length_grouped_order(lengths: list[int], batch_size: int, seed: int) -> list[int]:
    """Row order whose consecutive ``batch_size`` slices hold rows of nearly equal length.

    Rows are sorted longest first (ties in random order) and cut into batches; the widest
    batch stays first, the others are shuffled, and the one short batch (the shortest rows),
    if any, goes last so that a sequential DataLoader cuts exactly these batches. Widest first,
    as transformers' own length sampler does: a batch that does not fit fails at step 1, not
    hours into the run.
    Why not transformers' ``group_by_length`` sampler: it sorts only inside random
    mega-batches of ``min(rows // (4 × batch), 50)`` batches, so a data set of a few dozen
    batches is sorted only within quarters of it, and one of under 8 batches not at all (each
    mega-batch is one batch: on 48 rows it padded more than random batches). A padded
    position is computed like a real one (TRL's fused LM head scores every position where it
    has no Triton kernel, as on the CPU), so padding is throughput lost.
    """
    rng = random.Random(seed)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    short = batches.pop() if batches and len(batches[-1]) < batch_size else None
    widest, rest = batches[:1], batches[1:]
    rng.shuffle(rest)
    return [i for batch in widest + rest + ([short] if short else []) for i in batch]


@dataclass
class PaddingCollator:
    """Pads a batch to its longest row and turns masks into labels."""

    pad_token_id: int
    # None: no rounding up. Rows of similar length already share a width, and a wider batch
    # is computed in full (on the CPU every padded position costs as much as a real token).
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in rows[0]
        input_ids, labels, attention, positions = [], [], [], []
        for r in rows:
            ids = list(r["input_ids"])
            pad = longest - len(ids)
            input_ids.append(ids + [self.pad_token_id] * pad)
            labels.append([t if m else IGNORE_INDEX for t, m in zip(ids, r["assistant_masks"])] + [IGNORE_INDEX] * pad)
            attention.append([1] * len(ids) + [0] * pad)
            if packed:
                # Padding continues the last sample's positions so it never looks like a new sample.
                last = r["position_ids"][-1] if r["position_ids"] else -1
                positions.append(list(r["position_ids"]) + list(range(last + 1, last + 1 + pad)))
        batch = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if packed:
            # No attention_mask: transformers derives the per-sample block-diagonal mask from position_ids.
            batch["position_ids"] = torch.tensor(positions, dtype=torch.long)
        else:
            batch["attention_mask"] = torch.tensor(attention, dtype=torch.long)
        return batch

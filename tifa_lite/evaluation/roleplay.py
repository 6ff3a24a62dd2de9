"""Role-play evaluation.

``perplexity``: how well a model predicts the character's own lines in held-out
conversations — the loss is taken on assistant tokens only, masked exactly as SFT
masks them (:func:`tifa_lite.data.tokenize.encode_conversation`), so the number is
comparable to the training loss and to the same model before training.

``judge_prompt`` / ``parse_judgement``: an LLM-as-judge rubric in the style of RoleLLM
(speaking-style imitation, role-specific knowledge) and CharacterGLM (consistency,
human-likeness, engagement), usable with any local chat model via
:mod:`tifa_lite.chat_session`. A 135M judge is noise; the point is that a user can plug in a
stronger local model.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tifa_lite.errors import DataError

JUDGE_DIMENSIONS = {
    "consistency": "stays in character: personality, values and relationships match the profile",
    "style": "speaking style: tone, catch-phrases and vocabulary of the character",
    "knowledge": "uses what the character knows; no knowledge the character would not have",
    "coherence": "answers the conversation so far, sensibly and on topic",
    "human_likeness": "sounds like a person in a scene, not like an AI assistant",
}


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


def judge_prompt(character: str, profile: str | None, context: list[dict], reference: str | None, response: str) -> str:
    """One judging request. ``context`` is the conversation before the response
    (system turn excluded); ``reference`` the character's real line, if known."""
    lines = [
        f"You are an expert judge of role-play. Rate how well the RESPONSE plays the character {character}.",
    ]
    if profile:
        lines += ["", "[Character profile]", profile.strip()]
    lines += ["", "[Conversation so far]"]
    for turn in context:
        who = character if turn["role"] == "assistant" else "Other"
        lines.append(f"{who}: {turn['content']}")
    if reference:
        lines += ["", f"[What {character} really said, for reference]", reference]
    lines += ["", f"[RESPONSE to rate, as {character}]", response, "", "Rate each dimension from 1 (poor) to 10 (excellent):"]
    lines += [f"- {name}: {what}" for name, what in JUDGE_DIMENSIONS.items()]
    example = ", ".join(f'"{name}": 7' for name in JUDGE_DIMENSIONS)
    lines += ["", f"Answer with one JSON object and nothing else, e.g. {{{example}}}"]
    return "\n".join(lines)


def parse_judgement(text: str) -> dict[str, float] | None:
    """Scores from a judge's answer: a JSON object, or ``name: N`` lines. None if unparsable."""
    scores: dict[str, float] = {}
    match = re.search(r"\{[^{}]*\}", text, re.DOTALL)
    if match:
        try:
            data = json.loads(match.group(0))
            scores = {k: float(v) for k, v in data.items() if k in JUDGE_DIMENSIONS and isinstance(v, (int, float))}
        except (json.JSONDecodeError, ValueError):
            scores = {}
    if not scores:
        for name in JUDGE_DIMENSIONS:
            m = re.search(rf"{name}\W{{0,5}}(\d+(?:\.\d+)?)", text, re.IGNORECASE)
            if m:
                scores[name] = float(m.group(1))
    scores = {k: v for k, v in scores.items() if 1 <= v <= 10}
    return scores if len(scores) == len(JUDGE_DIMENSIONS) else None


def judge(
    candidate,
    judge_session,
    conversations: list[tuple[list[dict], str]],
    character: str,
) -> dict[str, Any]:
    """Generate the candidate's reply to each held-out context and have the judge rate it.
    ``candidate`` and ``judge_session`` are :class:`tifa_lite.chat_session.ChatSession`."""
    totals = {name: 0.0 for name in JUDGE_DIMENSIONS}
    rated, unparsed, examples = 0, 0, []
    for messages, _ in conversations:
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        turns = [m for m in messages if m["role"] != "system"]
        last_assistant = max(i for i, m in enumerate(turns) if m["role"] == "assistant")
        context, reference = turns[:last_assistant], turns[last_assistant]["content"]
        candidate.system = system
        candidate.history = list(context[:-1])
        response = candidate.say(context[-1]["content"])
        judge_session.reset()
        answer = judge_session.say(judge_prompt(character, system, context, reference, response))
        scores = parse_judgement(answer)
        if scores is None:
            unparsed += 1
        else:
            rated += 1
            for name, value in scores.items():
                totals[name] += value
        if len(examples) < 3:
            examples.append({"context": context[-1]["content"], "response": response, "judge": answer, "scores": scores})
    means = {name: round(total / rated, 3) for name, total in totals.items()} if rated else {}
    overall = round(sum(means.values()) / len(means), 3) if means else None
    return {"judge_rated": rated, "judge_unparsed": unparsed, "judge_scores": means, "judge_overall": overall, "judge_examples": examples}

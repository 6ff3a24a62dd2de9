"""Rows → ``PromptItem`` (a prompt as messages, and the reference answer if the row has one).

Reads any row tifa_lite reads for training: ``prompt`` (+ ``reference``/``response``/
``answer``/``output``/``completion``), chat formats (messages, sharegpt, alpaca, xtuner;
the last assistant turn is the reference), preference pairs (hh-rlhf included; the
chosen answer is the reference) and gsm8k ``question``/``answer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tifa_lite.config.schema import ModelConfig
from tifa_lite.data.formats import detect_format, to_messages
from tifa_lite.data.io import SkipReport, iter_records
from tifa_lite.data.preference import PairError, normalize_pair
from tifa_lite.errors import DataError
from tifa_lite.conversation.templates import ConversationRules

REFERENCE_KEYS = ("reference", "response", "answer", "output", "completion")


@dataclass
class PromptItem:
    prompt: list[dict[str, str]]
    reference: str | None
    where: str


def _as_messages(prompt: Any, where: str) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise DataError(f"{where}: prompt must be a string or a list of messages.")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):  # a conversational answer: [{"role": "assistant", ...}]
        return "".join(m.get("content", "") for m in value if isinstance(m, dict))
    return str(value)


def row_to_item(row: dict[str, Any], where: str, system_prompt: str | None = None) -> PromptItem:
    if "prompt" in row and "chosen" not in row:
        reference = next((_text(row[k]) for k in REFERENCE_KEYS if k in row), None)
        prompt = _as_messages(row["prompt"], where)
    elif "chosen" in row and "rejected" in row:
        try:
            pair = normalize_pair(row)
        except PairError as exc:
            raise DataError(f"{where}: bad preference pair ({exc}).") from None
        prompt = _as_messages(pair["prompt"], where)
        reference = _text(pair["chosen"])
    elif "question" in row and "answer" in row:
        prompt, reference = _as_messages(row["question"], where), _text(row["answer"])
    else:
        messages = to_messages(row, detect_format(row, where), where)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt, reference = messages[:last], messages[last]["content"]
    if system_prompt and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    return PromptItem(prompt, reference, where)


def read_prompts(
    spec: str | list[str],
    limit: int | None = None,
    on_error: str = "raise",
    system_prompt: str | None = None,
    need_reference: bool = False,
) -> list[PromptItem]:
    skipped = SkipReport()
    items: list[PromptItem] = []
    # The pairs' prompts are rendered for sampling now and for DPO later: the same <think> policy as training.
    rules = ConversationRules(ModelConfig())
    for record in iter_records(spec, on_error=on_error, skipped=skipped, key="--data"):
        if not isinstance(record.data, dict):
            raise DataError(f"{record.where}: prompts must be JSONL/JSON rows.")
        try:
            item = row_to_item(record.data, record.where, system_prompt)
            if need_reference and not (item.reference or "").strip():
                raise DataError(f"{record.where}: no reference answer (one of {', '.join(REFERENCE_KEYS)}).")
        except DataError as exc:
            if on_error == "skip":
                skipped.add("bad row", str(exc))
                continue
            raise
        items.append(PromptItem(rules(item.prompt, record.where), item.reference, item.where))
        if limit is not None and len(items) >= limit:
            break
    rules.log("--data")
    if not items:
        raise DataError(f"--data {spec}: no usable prompts ({skipped.summary()}).")
    return items

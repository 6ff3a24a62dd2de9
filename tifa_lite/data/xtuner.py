"""xtuner's dataset form ↔ our canonical ``messages``.

xtuner (InternLM) keeps a conversation as a list of turns, each turn one user input
and one model output, with an optional ``system`` on the turn it applies from::

    {"conversation": [{"system": "…", "input": "…", "output": "…"},
                      {"input": "…", "output": "…"}]}

(xtuner docs, ``docs/en/user_guides/dataset_format.md``, "Multi-turn Dialogue Dataset
Format"). A turn with an empty ``input`` and only ``output`` is its incremental
pre-training form, which maps to our ``text`` data, not to a conversation.
"""

from __future__ import annotations

import logging
from typing import Any

from tifa_lite.errors import DataError

log = logging.getLogger(__name__)

TURN_KEYS = {"system", "input", "output", "output_with_loss"}
_warned_output_with_loss = False


def xtuner_to_messages(record: dict[str, Any], where: str) -> list[dict[str, str]]:
    """One xtuner record → ``[{"role": …, "content": …}, …]``; errors name ``where``."""
    turns = record.get("conversation") if isinstance(record, dict) else None
    if not isinstance(turns, list) or not turns:
        raise DataError(
            f"{where}: xtuner data needs a non-empty 'conversation' list of "
            "{system?, input, output} turns."
        )
    messages: list[dict[str, str]] = []
    for index, turn in enumerate(turns):
        at = f"{where}: conversation[{index}]"
        if not isinstance(turn, dict):
            raise DataError(f"{at} must be an object with 'input' and 'output', got {type(turn).__name__}.")
        unknown = sorted(set(turn) - TURN_KEYS)
        if unknown:
            raise DataError(f"{at} has unknown key(s) {unknown}; an xtuner turn holds system, input, output.")
        system = _text(turn, "system", at, required=False)
        user = _text(turn, "input", at, required=False)
        answer = _text(turn, "output", at, required=True)
        if system:
            if index == 0:
                messages.append({"role": "system", "content": system})
            elif not (messages and messages[0]["role"] == "system" and messages[0]["content"] == system):
                # xtuner would splice a new system block mid-conversation; chat templates
                # (and so our training) allow one system message, first.
                raise DataError(
                    f"{at} sets a different 'system' from turn 0; only one system prompt per conversation "
                    "is supported. Put it on the first turn."
                )
        if not user:
            if len(turns) == 1 and not system:
                raise DataError(
                    f"{at} has an empty 'input': that is xtuner's incremental pre-training form. "
                    "Train it with train.method=cpt and data.format=text (a 'text' field or .txt files)."
                )
            raise DataError(f"{at} has an empty 'input'; every turn needs the user's message.")
        if turn.get("output_with_loss") is False:
            _warn_output_with_loss(at)
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": answer})
    return messages


def messages_to_xtuner(messages: list[dict[str, str]], where: str = "conversation") -> dict[str, Any]:
    """Canonical messages → one xtuner record (the inverse of :func:`xtuner_to_messages`)."""
    turns: list[dict[str, str]] = []
    system = ""
    pending: str | None = None
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role == "system" and index == 0:
            system = content
        elif role == "user" and pending is None:
            pending = content
        elif role == "assistant" and pending is not None:
            turn = {"input": pending, "output": content}
            if system and not turns:
                turn = {"system": system, **turn}
            turns.append(turn)
            pending = None
        else:
            raise DataError(
                f"{where}: message {index} ({role}) breaks the user/assistant alternation xtuner needs."
            )
    if pending is not None or not turns:
        raise DataError(f"{where}: the conversation must end with an assistant message.")
    return {"conversation": turns}


def text_to_xtuner(text: str) -> dict[str, Any]:
    """A raw document in xtuner's incremental pre-training form (no prompt, all loss)."""
    return {"conversation": [{"input": "", "output": text}]}


def _text(turn: dict[str, Any], key: str, at: str, required: bool) -> str:
    value = turn.get(key)
    if value is None:
        if required:
            raise DataError(f"{at} has no '{key}'.")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{at}: '{key}' must be text, got {type(value).__name__}.")
    if required and not value.strip():
        raise DataError(f"{at} has an empty '{key}'; there is nothing to train on.")
    return value


def _warn_output_with_loss(at: str) -> None:
    global _warned_output_with_loss
    if not _warned_output_with_loss:
        _warned_output_with_loss = True
        log.warning(
            "%s: output_with_loss=false is not supported; every assistant turn is trained "
            "(this warning is shown once).", at,
        )

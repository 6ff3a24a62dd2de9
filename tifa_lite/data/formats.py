"""Conversation formats → one canonical form: ``[{"role": …, "content": …}, …]``.

Supported: ``messages`` (OpenAI style), ``sharegpt`` (``conversations`` with
``from``/``value``), ``alpaca`` (instruction/input/output, optional system/history),
``xtuner`` (``conversation`` with input/output/system). ``auto`` picks by keys.
"""

from __future__ import annotations

from typing import Any

from tifa_lite.errors import DataError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "model": "assistant", "bot": "assistant", "system": "system",
}


def detect_format(row: dict[str, Any], where: str) -> str:
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "conversation" in row:
        return "xtuner"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "question" in row and "answer" in row:
        return "gsm8k"
    if "text" in row:
        return "text"
    raise DataError(
        f"{where}: cannot tell the data format from keys {sorted(row)}. Expected one of "
        "messages / conversations (sharegpt) / conversation (xtuner) / instruction+output (alpaca) / text; "
        "or set data.format explicitly."
    )


# What a record of each conversation format must hold; a record without it under an explicit
# data.format is most often data of another format (a ShareGPT export under the recipe's
# ``format: messages``), which is named rather than reported as a malformed record.
FORMAT_KEYS = {"messages": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "output"),
               "xtuner": ("conversation",)}
FORMAT_NAMES = {"messages": "plain messages", "sharegpt": "ShareGPT (conversations/from/value)",
                "alpaca": "Alpaca (instruction/input/output)", "xtuner": "XTuner (conversation)"}


def check_format_matches(row: dict[str, Any], fmt: str, where: str) -> None:
    """Raise a DataError saying which format ``row`` is in when it lacks ``fmt``'s keys."""
    needed = FORMAT_KEYS.get(fmt)
    if needed is None or all(k in row for k in needed):
        return
    try:
        found = detect_format(row, where)
    except DataError:
        found = None
    if found in FORMAT_KEYS:
        raise DataError(
            f"{where}: data.format={fmt}, but this record is {FORMAT_NAMES[found]} (keys {sorted(row)}): "
            f"set data.format={found}, or data.format=auto to tell each file's format by its keys."
        )
    raise DataError(
        f"{where}: data.format={fmt} needs the key(s) {', '.join(repr(k) for k in needed)}; this record has "
        f"{sorted(row)}. Rename the columns/keys, or set data.format to the format the data is in."
    )


def to_messages(row: dict[str, Any], fmt: str, where: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    check_format_matches(row, fmt, where)
    if fmt == "messages":
        messages = _from_messages(row.get("messages"), where)
    elif fmt == "sharegpt":
        messages = _from_sharegpt(row, where)
    elif fmt == "alpaca":
        messages = _from_alpaca(row, where)
    elif fmt == "xtuner":
        from tifa_lite.data.xtuner import xtuner_to_messages

        messages = xtuner_to_messages(row, where)
    else:
        raise DataError(f"{where}: data.format={fmt} is not a conversation format for SFT.")
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    validate_messages(messages, where)
    return messages


def validate_messages(messages: list[dict[str, str]], where: str) -> None:
    if not messages:
        raise DataError(f"{where}: empty conversation.")
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise DataError(f"{where}: message {index} has role {role!r}; expected one of {', '.join(ROLES)}.")
        if role == "system" and index != 0:
            raise DataError(f"{where}: message {index} is a system message; only the first message may be system.")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"{where}: message {index} ({role}) has empty or non-text content.")
    turns = [m["role"] for m in messages if m["role"] != "system"]
    if "assistant" not in turns:
        raise DataError(f"{where}: no assistant message, so there is nothing to train on.")
    if turns[0] != "user":
        raise DataError(f"{where}: the first non-system message must be from the user, got {turns[0]!r}.")
    for previous, current in zip(turns, turns[1:]):
        if previous == current:
            raise DataError(f"{where}: two consecutive {current!r} messages; user and assistant must alternate.")


def _from_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list):
        raise DataError(f"{where}: 'messages' must be a list of {{role, content}} objects.")
    out = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DataError(f"{where}: message {index} must be an object with 'role' and 'content'.")
        out.append({"role": message["role"], "content": _text_content(message["content"], where, index)})
    return out


def _text_content(content: Any, where: str, index: int) -> Any:
    """OpenAI's list-of-parts content (``[{"type": "text", "text": …}, …]``, common in
    exported chats) → its text parts joined by newlines; an image or audio part is refused
    by name, since a text model would silently train without it."""
    if not isinstance(content, list):
        return content
    texts = []
    for part_index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, str):
            texts.append(part)
        else:
            found = f"a {kind!r} part" if kind else f"{type(part).__name__} {part!r:.40}"
            raise DataError(
                f"{where}: message {index} content[{part_index}] is {found}; only text parts "
                '({"type": "text", "text": ...}) can be trained on. Remove the part, or the record.'
            )
    return "\n".join(texts)


def _from_sharegpt(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise DataError(f"{where}: 'conversations' must be a list of {{from, value}} objects.")
    out = []
    if row.get("system"):
        out.append({"role": "system", "content": row["system"]})
    for index, turn in enumerate(turns):
        # Some exports write ShareGPT turns with OpenAI's role/content names.
        speaker = turn.get("from", turn.get("role")) if isinstance(turn, dict) else None
        if speaker not in SHAREGPT_ROLES:
            raise DataError(
                f"{where}: conversations[{index}] has from={speaker!r}; expected one of {', '.join(SHAREGPT_ROLES)}."
            )
        out.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value", turn.get("content"))})
    return out


def _from_alpaca(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    out = []
    if row.get("system"):
        out.append({"role": "system", "content": row["system"]})
    for pair in row.get("history") or []:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DataError(f"{where}: 'history' must be a list of [instruction, response] pairs.")
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    instruction = row.get("instruction") or ""
    extra = row.get("input") or ""
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    out += [{"role": "user", "content": prompt}, {"role": "assistant", "content": row.get("output")}]
    return out

"""Preference pairs → TRL's preference form (``prompt``/``chosen``/``rejected``).

Accepted input, per row:

* TRL preference form, explicit prompt: ``prompt``/``chosen``/``rejected`` as plain
  strings, or as message lists (conversational);
* TRL implicit-prompt form: ``chosen``/``rejected`` message lists that share their
  first turns (the shared turns become the prompt);
* hh-rlhf (``data.format: hh_rlhf`` or auto): ``chosen``/``rejected`` strings of
  ``\\n\\nHuman: …\\n\\nAssistant: …`` turns, parsed into messages; the shared turns become
  the prompt, rendered with the chat template;
* hh-rlhf raw (``data.format: hh_rlhf_raw``, as Anima trained): the prompt stays the raw text
  up to and including the last ``\\n\\nAssistant:``, the answers are the rest of each string,
  and no chat template is applied.

Conversational prompts go through the recipe's ``<think>`` history policy
(:class:`tifa_lite.conversation.templates.ConversationRules`); the answers are the turns being scored,
so they keep their reasoning.

A pair that is identical, has an empty side, or shares no prefix is a bad pair: with
``data.on_error: raise`` it stops the run naming ``file:line``; with ``skip`` it is
counted in the report and left out. Extra keys (e.g. the builders' scores) are ignored.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from tifa_lite.config.schema import ModelConfig
from tifa_lite.data.io import SkipReport, iter_records
from tifa_lite.errors import ConfigError, DataError
from tifa_lite.conversation.templates import ConversationRules

log = logging.getLogger(__name__)

PREFERENCE_FORMATS = ("auto", "preference", "hh_rlhf", "hh_rlhf_raw")
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
HH_ASSISTANT = "\n\nAssistant:"
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class PairError(ValueError):
    """A bad pair; ``reason`` is the short key counted in the skip report."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass
class PreferenceData:
    rows: list[dict[str, Any]]
    skipped: SkipReport = field(default_factory=SkipReport)
    conversational: bool = True


def parse_hh(text: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: hi\\n\\nAssistant: hello"`` → user/assistant messages."""
    if not text.startswith("\n\n"):
        # Some exports strip the leading blank line; the turn markers are what count.
        text = "\n\n" + text.lstrip("\n")
    parts = HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise PairError("not hh-rlhf", "text does not start with a '\\n\\nHuman:' turn")
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": HH_ROLES[speaker], "content": content.strip()})
    return messages


def split_raw_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Anima's reading of an hh-rlhf pair (TRL's original DPO example, ``extract_anthropic_prompt``):
    the prompt is the raw text up to and including the last ``\\n\\nAssistant:`` of ``chosen``."""
    cut = chosen.rfind(HH_ASSISTANT)
    if cut < 0:
        raise PairError("not hh-rlhf", "chosen has no '\\n\\nAssistant:' turn")
    prompt = chosen[: cut + len(HH_ASSISTANT)]
    if not rejected.startswith(prompt):
        raise PairError("no shared prefix", "rejected does not start with chosen's prompt (up to its last Assistant turn)")
    return prompt, chosen[len(prompt):], rejected[len(prompt):]


def split_shared_prefix(
    chosen: list[dict[str, str]], rejected: list[dict[str, str]]
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Two full conversations → (shared prompt, chosen answer turns, rejected answer turns)."""
    shared = 0
    for a, b in zip(chosen, rejected):
        if a["role"] != b["role"] or a["content"] != b["content"]:
            break
        shared += 1
    if shared == len(chosen) and shared == len(rejected):
        raise PairError("identical", "chosen and rejected are identical")
    if shared == 0:
        raise PairError("no shared prefix", "chosen and rejected share no prompt turns")
    prompt, chosen_tail, rejected_tail = chosen[:shared], chosen[shared:], rejected[shared:]
    if not chosen_tail or not rejected_tail:
        raise PairError("empty", "one side is a prefix of the other (an empty answer)")
    if prompt[-1]["role"] != "user" or chosen_tail[0]["role"] != "assistant" or rejected_tail[0]["role"] != "assistant":
        raise PairError(
            "no shared prefix",
            "the two conversations diverge before a user turn, not at an assistant answer",
        )
    return prompt, chosen_tail, rejected_tail


def _require_assistant_marker(name: str, text: str) -> None:
    """Without the marker the whole string parses as one user turn, and the pair then fails
    later as 'no shared prompt turns', which hides the real cause."""
    if HH_ASSISTANT in text:
        return
    near = " It has 'Assistant:' without the blank line before it." if "Assistant:" in text else ""
    raise PairError(
        "not hh-rlhf",
        f"{name} has no '\\n\\nAssistant:' marker (hh-rlhf strings start each answer with a blank line "
        f"and 'Assistant:').{near} Add the marker, or give the pair as prompt/chosen/rejected keys",
    )


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _text_of(side: str | list[dict[str, str]]) -> str:
    return side if isinstance(side, str) else "".join(m["content"] for m in side if m["role"] == "assistant")


def normalize_pair(row: dict[str, Any], fmt: str = "auto", system_prompt: str | None = None) -> dict[str, Any]:
    """One input row → ``{"prompt", "chosen", "rejected"}`` (strings or message lists)."""
    if fmt not in PREFERENCE_FORMATS:
        raise ConfigError(f"data.format={fmt} is not a preference format; use one of {', '.join(PREFERENCE_FORMATS)}.")
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        raise PairError("missing keys", f"missing {missing}; a preference row needs chosen and rejected")
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")

    if prompt is None and fmt == "hh_rlhf_raw":
        if not (isinstance(chosen, str) and isinstance(rejected, str)):
            raise PairError("bad types", "data.format=hh_rlhf_raw needs chosen/rejected as hh-rlhf strings")
        prompt, chosen, rejected = split_raw_hh(chosen, rejected)
    elif prompt is None:
        if isinstance(chosen, str) and isinstance(rejected, str):
            if fmt == "preference" and "\n\nHuman:" not in chosen:
                raise PairError("no prompt", "plain-text chosen/rejected without a prompt key")
            for name, side in (("chosen", chosen), ("rejected", rejected)):
                _require_assistant_marker(name, side)
            chosen, rejected = parse_hh(chosen), parse_hh(rejected)
        elif not (_is_messages(chosen) and _is_messages(rejected)):
            raise PairError("bad types", "chosen/rejected must both be strings or both be message lists")
        prompt, chosen, rejected = split_shared_prefix(chosen, rejected)
    elif isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        pass
    elif _is_messages(prompt) and _is_messages(chosen) and _is_messages(rejected):
        if not prompt:
            raise PairError("no shared prefix", "empty prompt")
    else:
        raise PairError("bad types", "prompt/chosen/rejected must be all strings or all message lists")

    chosen_text, rejected_text = _text_of(chosen), _text_of(rejected)
    if not chosen_text.strip() or not rejected_text.strip():
        raise PairError("empty", "chosen or rejected is empty")
    if chosen_text.strip() == rejected_text.strip():
        raise PairError("identical", "chosen and rejected are identical")
    if system_prompt and isinstance(prompt, list) and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def read_preference_pairs(
    spec: str | list[str],
    fmt: str = "auto",
    on_error: str = "raise",
    system_prompt: str | None = None,
    key: str = "data.path",
    source: str = "auto",
    split: str = "train",
    model: ModelConfig | None = None,
) -> PreferenceData:
    """``model``: the recipe's model section, for its ``<think>`` policy (default: auto)."""
    skipped = SkipReport()
    rules = ConversationRules(model or ModelConfig())
    rows: list[dict[str, Any]] = []
    kinds: set[bool] = set()
    for record in iter_records(spec, on_error=on_error, skipped=skipped, key=key, source=source, split=split):
        if not isinstance(record.data, dict):
            raise DataError(f"{record.where}: preference data must be JSONL/JSON rows, not plain text.")
        try:
            pair = normalize_pair(record.data, fmt, system_prompt)
        except PairError as exc:
            message = f"{record.where}: bad preference pair ({exc})"
            if on_error == "skip":
                skipped.add(exc.reason, message)
                log.warning("%s; skipped", message)
                continue
            raise DataError(message + ". Fix or remove it, or set data.on_error=skip.") from None
        conversational = isinstance(pair["prompt"], list)
        if conversational:
            pair["prompt"] = rules(pair["prompt"], record.where)
        if kinds and conversational not in kinds:
            raise DataError(
                f"{record.where}: mixes plain-text and conversational pairs; one data set must use one form."
            )
        kinds.add(conversational)
        rows.append(pair)
    if not rows:
        raise DataError(f"{key}: no usable preference pairs ({skipped.summary()}).")
    if skipped.total:
        log.warning("%s: %s", key, skipped.summary())
    rules.log(key)
    return PreferenceData(rows, skipped, conversational=kinds == {True})


def pair_token_lengths(pair: dict[str, Any], tokenizer) -> tuple[int, int]:
    """Token count of prompt+chosen and prompt+rejected as the trainer will see them."""
    def count(completion):
        if isinstance(pair["prompt"], list):
            ids = tokenizer.apply_chat_template(pair["prompt"] + completion, tokenize=True, return_dict=False)
            return len(ids)
        return len(tokenizer(pair["prompt"] + completion)["input_ids"])

    return count(pair["chosen"]), count(pair["rejected"])


def drop_overlength(rows: list[dict[str, Any]], tokenizer, max_length: int) -> tuple[list[dict[str, Any]], int]:
    kept = [r for r in rows if max(pair_token_lengths(r, tokenizer)) <= max_length]
    return kept, len(rows) - len(kept)


def load_preference_splits(config, tokenizer=None) -> tuple[list[dict], list[dict] | None, dict[str, Any]]:
    """The recipe's data section → (train rows, eval rows or None, report)."""
    data = config.data
    if data.path is None:
        raise ConfigError(f"data.path is required for train.method={config.train.method} (a preference JSONL).")
    fmt = "auto" if data.format == "auto" else data.format
    if fmt not in PREFERENCE_FORMATS:
        raise ConfigError(
            f"data.format={data.format} with train.method={config.train.method}: preference methods read "
            "data.format auto, preference, hh_rlhf or hh_rlhf_raw."
        )
    if fmt == "hh_rlhf_raw" and data.system_prompt:
        raise ConfigError(
            "data.system_prompt with data.format=hh_rlhf_raw: the raw hh-rlhf prompt has no system turn. "
            "Unset data.system_prompt, or use data.format=hh_rlhf (parsed turns, chat template)."
        )
    common = dict(fmt=fmt, on_error=data.on_error, system_prompt=data.system_prompt, source=data.source,
                  model=config.model)
    train = read_preference_pairs(data.path, split=data.split, **common)
    rows = train.rows
    report: dict[str, Any] = {"skipped": dict(train.skipped.counts)}
    if data.shuffle:
        random.Random(data.seed).shuffle(rows)
    eval_rows = None
    if data.eval_path is not None:
        eval_rows = read_preference_pairs(data.eval_path, key="data.eval_path", **common).rows
    elif data.eval_ratio > 0:
        n_eval = max(1, int(len(rows) * data.eval_ratio))
        eval_rows, rows = rows[:n_eval], rows[n_eval:]
    if data.limit is not None:
        rows = rows[: data.limit]
    if data.overlength == "drop" and tokenizer is not None:
        rows, dropped = drop_overlength(rows, tokenizer, data.max_length)
        report["dropped_overlength"] = dropped
        if eval_rows:
            eval_rows, dropped_eval = drop_overlength(eval_rows, tokenizer, data.max_length)
            report["dropped_overlength_eval"] = dropped_eval
        if not rows:
            raise DataError(f"data.path: every pair is longer than data.max_length={data.max_length} tokens.")
    report["train_pairs"] = len(rows)
    report["eval_pairs"] = len(eval_rows) if eval_rows else 0
    return rows, eval_rows or None, report


def to_dataset(rows: Iterable[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list(list(rows))

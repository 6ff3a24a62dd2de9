"""The five rule rewards of the "R1-Zero on GSM8K" reproduction (willccbb's GRPO demo
as run on the ModelScope free tier, ``<think>`` in place of its ``<reasoning>`` tag),
exactly as the write-up scores, plus lenient variants under their own names.

The five registered names score as the write-up's functions do, character for
character (``tests/rewards/test_rule.py`` runs the write-up's own code beside ours):

- ``strict_format``: ``re.match(r"^<think>\\n.*?\\n</think>\\n<answer>\\n.*?\\n</answer>\\n$", r)``
  — no DOTALL (so the reasoning and the answer are one line each), final newline required;
- ``soft_format``: ``re.match(r"<think>.*?</think>\\s*<answer>.*?</answer>", r)`` — no
  DOTALL, so it fires only when neither block holds a newline: rarely, on real reasoning.
  That is the behaviour the published curves came from, so the reproduction keeps it;
- ``int_answer``: ``extract_xml_answer(r).isdigit()``; ``correctness``: ``extract_xml_answer(r)
  == answer`` as strings, the reference being ``answer.split("####")[1].strip()``
  (:func:`tifa_lite.data.gsm8k.final_answer`) — so ``<answer>1,000</answer>`` against "1,000"
  scores, against "1000" it does not;
- ``xmlcount``: 0.125 per well-placed tag, minus 0.001 per character after ``</answer>``.

Lenient variants (our improvements, one name away): ``soft_format_lenient`` and
``strict_format_lenient`` (DOTALL; soft allows leading whitespace, strict an optional final
newline), ``int_answer_numeric`` and ``correctness_numeric`` (numbers compared after
normalisation: "1,000" == "1000", "$5" == "5", "7.0" == "7").

Hand-written because TRL ships only ``think_format_reward`` (a different rule: 1.0 for
``<think>…</think>`` at the start, nothing about ``<answer>``); that one is available as
``trl:think_format_reward``.
"""

from __future__ import annotations

import re
from typing import Any

# The write-up's patterns, used with re.match and no flags.
SOFT_FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>")
STRICT_FORMAT_RE = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>\n$")
SOFT_FORMAT_LENIENT_RE = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
STRICT_FORMAT_LENIENT_RE = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>\n?$", re.DOTALL)
_NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)


def completion_texts(completions: list[Any]) -> list[str]:
    """Completions are strings (plain prompts) or one-message lists (chat prompts)."""
    texts = []
    for completion in completions:
        if isinstance(completion, str):
            texts.append(completion)
        elif isinstance(completion, list) and completion and isinstance(completion[-1], dict):
            texts.append(str(completion[-1].get("content") or ""))
        else:
            raise TypeError(f"expected a string or a list of messages per completion, got {type(completion).__name__}")
    return texts


def extract_xml_answer(text: str) -> str:
    """Text between the last ``<answer>`` and the next ``</answer>`` (the original's rule:
    with no tags at all this is the whole text, which then rarely matches)."""
    answer = text.split("<answer>")[-1]
    answer = answer.split("</answer>")[0]
    return answer.strip()


def normalize_number(text: str) -> str:
    """Canonical form of a numeric answer; non-numeric text is returned stripped."""
    s = text.strip().replace(",", "").replace("$", "").replace("\u00a0", "").strip()
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d+(?:\.\d+)?", s):
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        if s in ("-0", ""):
            s = "0"
        return s
    return text.strip()


def extract_final_answer(text: str) -> str | None:
    """A model's final answer however it wrote it: the last ``<answer>`` block, else the
    number after ``####``, else the last number in the text; None when there is none."""
    tagged = _ANSWER_TAG_RE.findall(text)
    if tagged:
        numbers = _NUMBER_RE.findall(tagged[-1])
        if numbers:
            return normalize_number(numbers[-1].replace("$", ""))
        if tagged[-1].strip():
            return tagged[-1].strip()
    if "####" in text:
        numbers = _NUMBER_RE.findall(text.split("####")[-1])
        if numbers:
            return normalize_number(numbers[0].replace("$", ""))
    numbers = _NUMBER_RE.findall(text)
    return normalize_number(numbers[-1].replace("$", "")) if numbers else None


def count_xml(text: str) -> float:
    score = 0.0
    if text.count("<think>\n") == 1:
        score += 0.125
    if text.count("\n</think>\n") == 1:
        score += 0.125
    if text.count("\n<answer>\n") == 1:
        score += 0.125
        score -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        score += 0.125
        # Text trailing the closing tag is what the model should learn to stop producing.
        score -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return score


def _matches(pattern: re.Pattern, completions, score: float) -> list[float]:
    return [score if pattern.match(t) else 0.0 for t in completion_texts(completions)]


def _check_lengths(texts: list[str], answer: list) -> None:
    if len(answer) != len(texts):
        raise ValueError(f"{len(texts)} completions but {len(answer)} reference answers")


def xmlcount(completions, **kwargs) -> list[float]:
    """0.125 per well-placed tag, minus 0.001 per character after ``</answer>``."""
    return [count_xml(t) for t in completion_texts(completions)]


def soft_format(completions, score: float = 0.5, **kwargs) -> list[float]:
    """The write-up's soft format: ``<think>…</think>`` then ``<answer>…</answer>``, no newline inside either."""
    return _matches(SOFT_FORMAT_RE, completions, score)


def strict_format(completions, score: float = 0.5, **kwargs) -> list[float]:
    """The write-up's strict format: every tag on its own line, one line each inside, a final newline."""
    return _matches(STRICT_FORMAT_RE, completions, score)


def soft_format_lenient(completions, score: float = 0.5, **kwargs) -> list[float]:
    """``soft_format`` that lets the blocks span lines and allows leading whitespace."""
    return _matches(SOFT_FORMAT_LENIENT_RE, completions, score)


def strict_format_lenient(completions, score: float = 0.5, **kwargs) -> list[float]:
    """``strict_format`` that lets the blocks span lines and makes the final newline optional."""
    return _matches(STRICT_FORMAT_LENIENT_RE, completions, score)


def int_answer(completions, score: float = 0.5, **kwargs) -> list[float]:
    """The write-up's rule: ``score`` when the ``<answer>`` text is ``str.isdigit()``."""
    return [score if extract_xml_answer(t).isdigit() else 0.0 for t in completion_texts(completions)]


def int_answer_numeric(completions, score: float = 0.5, **kwargs) -> list[float]:
    """``score`` when the ``<answer>`` text is an integer once normalised ("1,000", "-3", "7.0")."""
    return [
        score if re.fullmatch(r"-?\d+", normalize_number(extract_xml_answer(t))) else 0.0
        for t in completion_texts(completions)
    ]


def correctness(completions, answer: list[str], score: float = 2.0, **kwargs) -> list[float]:
    """The write-up's rule: ``score`` when the ``<answer>`` text equals the reference string."""
    texts = completion_texts(completions)
    _check_lengths(texts, answer)
    return [score if extract_xml_answer(t) == a else 0.0 for t, a in zip(texts, answer)]


def correctness_numeric(completions, answer: list[str], score: float = 2.0, **kwargs) -> list[float]:
    """``correctness`` with both sides normalised as numbers ("1,000" == "1000", "$5" == "5")."""
    texts = completion_texts(completions)
    _check_lengths(texts, answer)
    return [
        score if normalize_number(extract_xml_answer(t)) == normalize_number(str(a)) else 0.0
        for t, a in zip(texts, answer)
    ]


def final_number(completions, answer: list[str], score: float = 1.0, **kwargs) -> list[float]:
    """``score`` when the final answer, read as the evaluator reads it (``<answer>``, ``####``,
    else the last number), equals the reference. Not one of the five: it gives a signal to
    models too small to follow the tag format (the CPU demonstration)."""
    texts = completion_texts(completions)
    _check_lengths(texts, answer)
    return [
        score if (pred := extract_final_answer(t)) is not None and pred == normalize_number(str(a)) else 0.0
        for t, a in zip(texts, answer)
    ]

"""The five rule rewards of the "R1-Zero on GSM8K" reproduction (willccbb's GRPO
demo, as run on the ModelScope free tier), with ``<think>`` in place of its
``<reasoning>`` tag so they agree with the R1-Zero system prompt.

Hand-written because TRL ships only ``think_format_reward`` (a different rule:
1.0 for ``<think>…</think>`` at the start, nothing about ``<answer>``); that one is
available as ``trl:think_format_reward``. Two deliberate departures from the
original code, both fixing bugs users hit there: the format regexes use DOTALL
(the original's ``.*?`` never spans lines, so multi-line reasoning could not earn
the format rewards), and answers are compared after number normalisation
("1,000" == "1000", "$5" == "5", "7.0" == "7").
"""

from __future__ import annotations

import re
from typing import Any

SOFT_FORMAT_RE = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
STRICT_FORMAT_RE = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>\n?$", re.DOTALL)
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


def xmlcount(completions, **kwargs) -> list[float]:
    """0.125 per well-placed tag, minus 0.001 per character after ``</answer>``."""
    return [count_xml(t) for t in completion_texts(completions)]


def soft_format(completions, score: float = 0.5, **kwargs) -> list[float]:
    """``score`` when the completion is ``<think>…</think>`` then ``<answer>…</answer>``."""
    return [score if SOFT_FORMAT_RE.match(t) else 0.0 for t in completion_texts(completions)]


def strict_format(completions, score: float = 0.5, **kwargs) -> list[float]:
    """``score`` when every tag sits on its own line and nothing follows ``</answer>``."""
    return [score if STRICT_FORMAT_RE.match(t) else 0.0 for t in completion_texts(completions)]


def int_answer(completions, score: float = 0.5, **kwargs) -> list[float]:
    """``score`` when the ``<answer>`` text is an integer (the shape of every GSM8K answer)."""
    return [score if extract_xml_answer(t).isdigit() else 0.0 for t in completion_texts(completions)]


def correctness(completions, answer: list[str], score: float = 2.0, **kwargs) -> list[float]:
    """``score`` when the ``<answer>`` text equals the reference (the GSM8K ``####`` number)."""
    texts = completion_texts(completions)
    if len(answer) != len(texts):
        raise ValueError(f"{len(texts)} completions but {len(answer)} reference answers")
    return [
        score if normalize_number(extract_xml_answer(t)) == normalize_number(str(a)) else 0.0
        for t, a in zip(texts, answer)
    ]


def final_number(completions, answer: list[str], score: float = 1.0, **kwargs) -> list[float]:
    """``score`` when the final answer, read as the evaluator reads it (``<answer>``, ``####``,
    else the last number), equals the reference. Not one of the five: it gives a signal to
    models too small to follow the tag format (the CPU demonstration)."""
    texts = completion_texts(completions)
    if len(answer) != len(texts):
        raise ValueError(f"{len(texts)} completions but {len(answer)} reference answers")
    return [
        score if (pred := extract_final_answer(t)) is not None and pred == normalize_number(str(a)) else 0.0
        for t, a in zip(texts, answer)
    ]

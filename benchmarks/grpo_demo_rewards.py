"""Reward for the GRPO CPU demonstration, loaded by reference
(``benchmarks/grpo_demo_rewards.py:answer_sentence``) to show custom rewards at work."""

import re

from tifa_lite.rewards.rule import completion_texts

_ANSWER_SENTENCE = re.compile(r"answer is:?\s*\$?-?\d[\d,]*(?:\.\d+)?\s*\.?\s*$", re.IGNORECASE)


def answer_sentence(completions, score: float = 0.5, **kwargs) -> list[float]:
    """``score`` when the completion ends with "The answer is <number>." — the format the demo's
    system prompt asks for, and one the 135M model already produces now and then."""
    return [score if _ANSWER_SENTENCE.search(t) else 0.0 for t in completion_texts(completions)]

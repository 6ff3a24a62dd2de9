"""What a low score means, in words: the sentence each reward adds to an MGRPO revision
prompt (:mod:`tifa_lite.methods.mgrpo`) when it failed on a first answer.

Keyed by the registered reward name (the name TRL logs, ``rewards/<name>/mean``), so the
reward functions themselves stay exactly as they score. A reward that is not listed here
(a user's function, a ``trl:`` one) gets a generic sentence naming it, or the sentence the
recipe gives it in ``grpo.revision.critiques``.

"Failed" depends on what a reward's scale means: a rule reward failed when it gave no
credit, a penalty when it is below zero, ``xmlcount`` when it is short of its 0.5 maximum,
and a learned score (``reward_model``) when it is below its group's mean, since its scale
has no fixed pass mark.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence


def no_credit(score: float, group: Sequence[float]) -> bool:
    return score <= 0.0


def penalised(score: float, group: Sequence[float]) -> bool:
    return score < 0.0


def below_group_mean(score: float, group: Sequence[float]) -> bool:
    return score < statistics.fmean(group)


def short_of(maximum: float) -> Callable[[float, Sequence[float]], bool]:
    def failed(score: float, group: Sequence[float]) -> bool:
        return score < maximum

    return failed


@dataclass(frozen=True)
class Critique:
    sentence: str
    failed: Callable[[float, Sequence[float]], bool] = no_credit


WRONG_NUMBER = "The final number is wrong."

CRITIQUES: dict[str, Critique] = {
    "xmlcount": Critique(
        "Put <think>, </think>, <answer> and </answer> each on a line of its own, and write nothing after </answer>.",
        short_of(0.5),
    ),
    "soft_format": Critique("The answer is not inside <answer> tags after the <think> reasoning."),
    "strict_format": Critique("The layout is not exactly <think> reasoning </think> then <answer> answer </answer>, each tag on its own line."),
    "int_answer": Critique("The text inside <answer> is not a whole number."),
    "correctness": Critique(WRONG_NUMBER),
    "final_number": Critique(WRONG_NUMBER),
    "repetition": Critique("The reply repeats itself.", penalised),
    "repetition_penalty_reward": Critique("The reply repeats itself.", penalised),
    "length": Critique("The reply is too long; say it in fewer words.", penalised),
    "soft_overlong_punishment": Critique("The reply is too long; say it in fewer words.", penalised),
    "reward_model": Critique("A judge of quality rated this reply below the others; make it better.", below_group_mean),
}
# The lenient variants fail for the same reasons as the write-up's exact rewards, only less often.
CRITIQUES.update({f"{name}{suffix}": CRITIQUES[name] for name, suffix in (
    ("soft_format", "_lenient"), ("strict_format", "_lenient"), ("int_answer", "_numeric"), ("correctness", "_numeric"),
)})

NOTHING_FAILED = "Check the answer and improve it where you can."


def critique_for(name: str, extra: dict[str, str] | None = None) -> Critique:
    """The critique of a reward by its logged name (``correctness_2`` is a second ``correctness``)."""
    extra = extra or {}
    base = re.sub(r"_\d+$", "", name)
    for key in (name, base):
        if key in extra:
            return Critique(extra[key], CRITIQUES[key].failed if key in CRITIQUES else no_credit)
    for key in (name, base):
        if key in CRITIQUES:
            return CRITIQUES[key]
    return Critique(f"It scored low on the '{name}' check.")


def critique(scores: dict[str, float], groups: dict[str, Sequence[float]], extra: dict[str, str] | None = None) -> str:
    """The sentences of every reward that failed on one completion, once each, in reward
    order. ``scores``: reward name → this completion's score (NaN: the reward abstained);
    ``groups``: reward name → the scores of its whole group."""
    sentences: list[str] = []
    for name, score in scores.items():
        if score != score:  # NaN: the reward had no opinion on this completion
            continue
        rule = critique_for(name, extra)
        if rule.failed(score, [s for s in groups[name] if s == s]) and rule.sentence not in sentences:
            sentences.append(rule.sentence)
    return " ".join(sentences) or NOTHING_FAILED

"""Preference-pair builders, written as JSONL in TRL's conversational preference form
with their scores kept (``chosen_score``/``rejected_score``), ready for ``train.method: dpo``.

* :func:`reference_vs_self` (Anima): chosen = the data's reference answer, rejected =
  what the current model says to the same prompt.
* :func:`anti_repetition` (Tifa stage 4): several samples per prompt scored by n-gram
  repetition rate; chosen = least repetitive, rejected = most repetitive; prompts whose
  gap is under ``min_gap`` are skipped (no clear preference to learn).

Each has an ``iter_`` form that yields one :class:`Outcome` per prompt as soon as its
generation batch is done; the CLI journals those (:mod:`tifa_lite.pairs.journal`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tifa_lite.atomic import write_jsonl
from tifa_lite.pairs.generate import GenerationSettings, generate
from tifa_lite.pairs.prompts import PromptItem
from tifa_lite.pairs.repetition import repetition_rate, units

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    prompts: int = 0
    pairs: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _pair(item: PromptItem, chosen: str, rejected: str, **extra: Any) -> dict[str, Any]:
    return {
        "prompt": item.prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **extra,
        "source": item.where,
    }


@dataclass
class Outcome:
    """What one prompt gave: a pair, or the reason it gave none."""

    item: PromptItem
    pair: dict[str, Any] | None = None
    skipped: str | None = None


def collect(outcomes: Iterable[Outcome], prompts: int) -> tuple[list[dict[str, Any]], BuildReport]:
    report = BuildReport(prompts=prompts)
    pairs = []
    for outcome in outcomes:
        if outcome.pair is not None:
            pairs.append(outcome.pair)
        else:
            report.skip(outcome.skipped or "no pair")
    report.pairs = len(pairs)
    return pairs, report


def generate_in_chunks(
    model, tokenizer, items: list[PromptItem], settings: GenerationSettings, done: Container[str] = ()
) -> Iterator[tuple[PromptItem, list[str]]]:
    """Samples for each prompt not in ``done`` (by ``where``), one generation batch at a time, so
    a caller can keep each result as soon as it exists. Each batch is seeded from its place in
    ``items``: a build resumed after its first k batches samples what an unbroken one would."""
    per_batch = max(1, settings.batch_size // settings.num_samples)
    for start in range(0, len(items), per_batch):
        chunk = [item for item in items[start : start + per_batch] if item.where not in done]
        if chunk:
            outputs = generate(model, tokenizer, [i.prompt for i in chunk], replace(settings, seed=settings.seed + start))
            yield from zip(chunk, outputs)


def iter_reference_vs_self(
    model, tokenizer, items: list[PromptItem], settings: GenerationSettings | None = None, ngram: int = 3,
    done: Container[str] = (),
) -> Iterator[Outcome]:
    settings = settings or GenerationSettings(num_samples=1)
    usable = [i for i in items if (i.reference or "").strip()]
    for item in items:
        if not (item.reference or "").strip() and item.where not in done:
            yield Outcome(item, skipped="no reference")
    for item, samples in generate_in_chunks(model, tokenizer, usable, settings, done):
        own = samples[0]
        if not own.strip():
            yield Outcome(item, skipped="empty generation")
        elif own.strip() == item.reference.strip():
            yield Outcome(item, skipped="generation equals reference")
        else:
            yield Outcome(item, _pair(
                item, item.reference, own, builder="reference_vs_self",
                chosen_score=repetition_rate(item.reference, ngram), rejected_score=repetition_rate(own, ngram),
                score=f"rep-{ngram}",
            ))


def iter_anti_repetition(
    model,
    tokenizer,
    items: list[PromptItem],
    settings: GenerationSettings | None = None,
    ngram: int = 3,
    min_gap: float = 0.1,
    min_units: int = 8,
    done: Container[str] = (),
) -> Iterator[Outcome]:
    settings = settings or GenerationSettings(num_samples=4, temperature=0.9)
    if settings.num_samples < 2:
        raise ValueError("anti_repetition needs num_samples >= 2 to have something to compare")
    for item, samples in generate_in_chunks(model, tokenizer, items, settings, done):
        scored = [(repetition_rate(s, ngram), s) for s in samples]
        # A very short answer scores 0 without being a good answer: it may be rejected, never chosen.
        eligible = [x for x in scored if len(units(x[1])) >= min_units]
        if not eligible:
            yield Outcome(item, skipped="all samples too short")
            continue
        best = min(eligible, key=lambda x: x[0])
        # Among the other samples: on a tie (e.g. min_gap 0 and no repetition anywhere) the
        # pair must still contrast two samples, not one sample with itself.
        worst = max((x for x in scored if x is not best), key=lambda x: x[0])
        if worst[0] - best[0] < min_gap:
            yield Outcome(item, skipped="gap below min_gap")
        elif worst[1].strip() == best[1].strip():
            yield Outcome(item, skipped="no distinct samples")
        else:
            yield Outcome(item, _pair(
                item, best[1], worst[1], builder="anti_repetition",
                chosen_score=best[0], rejected_score=worst[0], score=f"rep-{ngram}",
                sample_scores=[x[0] for x in scored],
            ))


def _all_at_once(iterate: Callable[..., Iterator[Outcome]]) -> Callable[..., tuple[list[dict[str, Any]], BuildReport]]:
    """The list form of a builder: ``(pairs, report)`` once every prompt is done."""

    @functools.wraps(iterate)
    def build(model, tokenizer, items: list[PromptItem], *args: Any, **kwargs: Any):
        return collect(iterate(model, tokenizer, items, *args, **kwargs), len(items))

    build.__name__ = build.__qualname__ = iterate.__name__.removeprefix("iter_")
    build.__doc__ = f"All pairs at once, ``(pairs, BuildReport)``: :func:`{iterate.__name__}` collected."
    return build


reference_vs_self = _all_at_once(iter_reference_vs_self)
anti_repetition = _all_at_once(iter_anti_repetition)


def mean_repetition(
    model, tokenizer, items: list[PromptItem], settings: GenerationSettings | None = None, ngram: int = 3
) -> dict[str, Any]:
    """Mean rep-n of sampled outputs: the measure the anti-repetition stage should lower."""
    settings = settings or GenerationSettings(num_samples=1)
    outputs = generate(model, tokenizer, [i.prompt for i in items], settings)
    rates = [repetition_rate(s, ngram) for samples in outputs for s in samples]
    return {
        f"repetition_rate@{ngram}": sum(rates) / len(rates),
        "looping_fraction": sum(r >= 0.5 for r in rates) / len(rates),
        "n": len(rates),
    }


def write_pairs(pairs: Iterable[dict[str, Any]], path: str | Path) -> Path:
    return write_jsonl(pairs, path)

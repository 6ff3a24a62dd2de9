"""Plain greedy decoding: one definition for every evaluator and check.

``generate()`` fills every field a call leaves unset from the model's
``generation_config.json``, and a merged folder ships the recipe's sampling there
(``repetition_penalty: 1.17``, say). Greedy alone (``do_sample=False``) still applies
those penalties, so "greedy" on a merged folder and on the same adapter over its base
would decode differently. Every field that changes a greedy decode is named here with
its neutral value."""

from __future__ import annotations

from typing import Any

# Fields that alter a greedy (single-beam, non-sampling) decode, at their neutral values.
NEUTRAL = {
    "do_sample": False,
    "num_beams": 1,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
}


def plain_greedy(max_new_tokens: int, eos_token_id: int | list[int] | None = None,
                 pad_token_id: int | None = None) -> dict[str, Any]:
    """Keyword arguments for ``model.generate`` that decode plain greedy, whatever the
    model's ``generation_config.json`` says."""
    kwargs: dict[str, Any] = dict(NEUTRAL, max_new_tokens=max_new_tokens)
    if eos_token_id is not None:
        kwargs["eos_token_id"] = eos_token_id
    if pad_token_id is None and eos_token_id is not None:
        pad_token_id = eos_token_id[0] if isinstance(eos_token_id, list) else eos_token_id
    if pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id
    return kwargs

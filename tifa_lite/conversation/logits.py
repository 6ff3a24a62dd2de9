"""What ``generate`` gets for the OpenAI request fields transformers has no flag for: OpenAI's
presence/frequency penalties, ``logit_bias``, and a stop that another thread can set (a client
that left).

transformers' ``repetition_penalty`` is multiplicative over prompt and reply alike; OpenAI's
penalties are additive and count only the tokens generated so far
(``logit -= count * frequency_penalty + (count > 0) * presence_penalty``), so front ends that send
them (SillyTavern's sliders) get that definition here. ``logit_bias`` is transformers' own
``sequence_bias`` (one-token sequences), so only the conversion from OpenAI's shape lives here.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria


class OpenAIPenalties(LogitsProcessor):
    """Presence and frequency penalties over the reply generated so far (not the prompt)."""

    def __init__(self, prompt_len: int, presence_penalty: float = 0.0, frequency_penalty: float = 0.0):
        self.prompt_len = prompt_len
        self.presence = presence_penalty
        self.frequency = frequency_penalty

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.prompt_len:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


class StopWhenSet(StoppingCriteria):
    """Ends generation at the next token once ``event`` is set (the client disconnected)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def sequence_bias(logit_bias: dict[str | int, float], vocab_size: int) -> dict[tuple[int, ...], float]:
    """OpenAI's ``{"token id": bias}`` as transformers' ``sequence_bias``; raises ValueError
    naming the first id outside the vocabulary."""
    out: dict[tuple[int, ...], float] = {}
    for key, bias in logit_bias.items():
        token = int(key)
        if not 0 <= token < vocab_size:
            raise ValueError(f"token id {key} is outside the vocabulary (0..{vocab_size - 1})")
        out[(token,)] = float(bias)
    return out


class WindowedRepetitionPenalty(LogitsProcessor):
    """transformers' multiplicative ``repetition_penalty`` over the last ``window`` tokens only
    (prompt included), which is Ollama's ``repeat_penalty`` with ``repeat_last_n``."""

    def __init__(self, penalty: float, window: int):
        self.penalty, self.window = penalty, window

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        recent = input_ids[:, -self.window:]
        picked = torch.gather(scores, 1, recent)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(1, recent, picked)

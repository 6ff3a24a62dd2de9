"""One generation as the server runs it: the tokens of each of its ``n`` replies as they come
(a ``generate`` streamer), their log-probabilities, and each reply's text, finish reason and
token count — the same for a streamed and a whole answer, so the two cannot differ.

Log-probabilities are the model's own (the log-softmax of the raw logits, before temperature,
top-p or penalties), as OpenAI and vLLM return them; they are read with a forward hook on the
output embedding, the one place every model, adapter and quantisation goes through. The
end-of-turn token closing a reply is not a reply token and has none.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from tifa_lite.conversation.reply_text import StreamText, decode, final_text

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Row:
    """One of the ``n`` replies while it is generated."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    done: str | None = None  # "eos" or "stop" once the reply is over (later tokens are padding)


@dataclass
class Choice:
    text: str
    finish_reason: str
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None


class LogitsTap:
    """The log-softmax of the last position's raw logits at each forward pass."""

    def __init__(self, model, k: int):
        self.k = k
        self.latest = None
        self._handle = model.get_output_embeddings().register_forward_hook(self._record)

    def _record(self, _module, _inputs, output) -> None:
        import torch

        self.latest = torch.log_softmax(output[:, -1].float(), dim=-1).cpu()

    def close(self) -> None:
        self._handle.remove()

    def entry(self, row: int, token: int) -> TokenLogprob:
        scores = self.latest[row]
        top = []
        if self.k:
            values, ids = scores.topk(self.k)
            top = list(zip(ids.tolist(), values.tolist()))
        return TokenLogprob(token, float(scores[token]), top)


STOP_TAIL = 8  # tokens beyond the longest stop string: a new match ends within them


def stop_hit(sink: "TokenSink", tokens: list[int]) -> bool:
    """Whether a reply's tokens hold one of the sink's stop strings, by the rule the reply's
    text is cut with. An earlier match would have ended the reply already, so past a few
    dozen tokens only the tail is decoded."""
    window = max(len(s) for s in sink.stop) + STOP_TAIL
    if len(tokens) <= 4 * window:
        return final_text(decode(sink.tokenizer, tokens), sink.stop, sink.strip, sink.think_open)[1]
    tail = decode(sink.tokenizer, tokens[-window:])
    return any(s in tail for s in sink.stop)


class StopStrings:
    """A ``generate`` stopping criterion for :func:`stop_hit` (transformers' ``stop_strings``
    would build tables over the whole vocabulary for every request, and could disagree with
    the cut at the edges)."""

    def __init__(self, sink: "TokenSink", prompt_len: int):
        self.sink, self.prompt_len = sink, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        hits = []
        for i, row in enumerate(input_ids[:, self.prompt_len:].tolist()):
            hits.append(stop_hit(self.sink, row))
            if hits[-1] and i < len(self.sink.rows):
                self.sink.stopped.add(i)
        return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)


class TokenSink:
    """A ``generate`` streamer that keeps each reply's tokens and tells ``on_step`` (from the
    generation thread) after every step."""

    def __init__(self, tokenizer, n: int, eos_ids: set[int], stop: list[str] | None, strip: bool = True,
                 think_open: bool = False, tap: LogitsTap | None = None,
                 on_step: Callable[[], None] | None = None):
        self.tokenizer, self.eos_ids, self.stop = tokenizer, eos_ids, stop
        self.strip, self.think_open = strip, think_open
        self.rows = [Row() for _ in range(n)]
        self.tap = tap
        self.on_step = on_step
        self._prompt_seen = False
        self.stopped: set[int] = set()  # rows StopStrings ended; their next token is padding
        self.lock = threading.Lock()
        self.ended = False

    def raw(self, i: int) -> str:
        return decode(self.tokenizer, self.rows[i].tokens)

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate hands the prompt over first
            self._prompt_seen = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            self.record(i, token, self.tap.entry(i, token) if self.tap is not None else None)
            if i in self.stopped:
                self.rows[i].done = self.rows[i].done or "stop"
        self.notify()

    def record(self, i: int, token: int, logprob: TokenLogprob | None = None) -> None:
        """Reply ``i``'s next token (ignored once the reply is over: padding)."""
        with self.lock:
            row = self.rows[i]
            if row.done:
                return
            row.tokens.append(token)
            if token in self.eos_ids:
                row.done = "eos"
            elif logprob is not None:
                row.logprobs.append(logprob)

    def notify(self) -> None:
        if self.on_step is not None:
            self.on_step()

    def end(self) -> None:
        self.ended = True
        if self.on_step is not None:
            self.on_step()

    def streams(self) -> list[StreamText]:
        return [StreamText(self.stop, self.strip, self.think_open) for _ in self.rows]

    def choices(self, max_new_tokens: int | None, cancelled: bool, with_logprobs: bool) -> list[Choice]:
        out = []
        for i, row in enumerate(self.rows):
            text, hit = final_text(self.raw(i), self.stop, self.strip, self.think_open)
            at_limit = max_new_tokens is not None and len(row.tokens) >= max_new_tokens and not (row.done or hit)
            finish = "cancelled" if cancelled else "length" if at_limit else "stop"
            out.append(Choice(text, finish, len(row.tokens), list(row.logprobs) if with_logprobs else None))
        return out


def token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def chat_logprobs(tokenizer, entries: list[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat shape: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``."""
    def one(token_id: int, logprob: float) -> dict[str, Any]:
        text = token_text(tokenizer, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
                        for e in entries]}


def completion_logprobs(tokenizer, entries: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """OpenAI's legacy completions shape: parallel ``tokens``/``token_logprobs``/``top_logprobs``
    /``text_offset`` lists (``top_logprobs`` maps token text to log-probability)."""
    tokens, offsets = [], []
    for e in entries:
        offsets.append(offset)
        tokens.append(token_text(tokenizer, e.token_id))
        offset += len(tokens[-1])
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{token_text(tokenizer, t): lp for t, lp in e.top} for e in entries],
            "text_offset": offsets}

"""A reply's text from its generated tokens, whole (:func:`final_text`) or as it streams
(:class:`StreamText`), so that the streamed deltas join to exactly the whole reply.

The whole reply is the decoded text with leading/trailing whitespace stripped (chat; a text
completion keeps it), cut before the first stop string (OpenAI's contract: the stop string is
not part of the reply; ``generate`` stops only *after* it). A stream cannot take text back, so
it holds back what a later token may still remove: trailing whitespace, a suffix that may be
the beginning of a stop string, and an unfinished UTF-8 character.
"""

from __future__ import annotations

THINK_OPEN = "<think>"


def decode(tokenizer, ids) -> str:
    """The one decoding of generated ids both the whole reply and its stream use."""
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    hits = [text.find(s) for s in stop or () if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def _head(raw: str, strip: bool, think_open: bool, whole: bool) -> str | None:
    """The reply's beginning; None while a stream cannot tell it yet."""
    text = raw.lstrip() if strip else raw
    if think_open:
        # The generation prompt opened a think block: the reply is its continuation, kept
        # whole so the think policy can find the block later.
        if not whole and THINK_OPEN.startswith(text):
            return None
        if not text.startswith(THINK_OPEN):
            text = THINK_OPEN + "\n" + text
    return text


def final_text(raw: str, stop: list[str] | None = None, strip: bool = True, think_open: bool = False) -> tuple[str, bool]:
    """(the reply, whether a stop string ended it) for the whole decoded generation ``raw``."""
    text = _head(raw.rstrip() if strip else raw, strip, think_open, whole=True)
    text, hit = _cut_at_stop(text, stop)
    return (text.rstrip() if strip and hit else text), hit


def _held_back(text: str, stop: list[str] | None) -> int:
    """How many trailing characters may be the beginning of a stop string."""
    longest = 0
    for s in stop or ():
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


def safe_text(raw: str, stop: list[str] | None = None, strip: bool = True, think_open: bool = False) -> str:
    """The part of the reply that no later token can change, given the text decoded so far."""
    text = _head(raw, strip, think_open, whole=False)
    if text is None:
        return ""
    if text.endswith("\ufffd"):  # an unfinished multi-byte character: the next token completes it
        text = text.rstrip("\ufffd")
    text, _ = _cut_at_stop(text, stop)
    while True:
        before = text
        k = _held_back(text, stop)
        if k:
            text = text[:-k]
        if strip:
            text = text.rstrip()
        if text == before:
            return text


class StreamText:
    """Deltas of one streamed reply: ``feed`` the text decoded so far after each token, then
    ``finish`` with the whole reply; the deltas join to it."""

    def __init__(self, stop: list[str] | None = None, strip: bool = True, think_open: bool = False):
        self.stop, self.strip, self.think_open = stop, strip, think_open
        self.sent = ""

    def feed(self, raw: str) -> str:
        safe = safe_text(raw, self.stop, self.strip, self.think_open)
        if len(safe) > len(self.sent) and safe.startswith(self.sent):
            delta, self.sent = safe[len(self.sent):], safe
            return delta
        return ""

    def finish(self, final: str) -> str:
        """The rest of the whole reply; what was sent is always its beginning (the property
        tests/conversation/test_reply_text.py checks)."""
        if not final.startswith(self.sent):
            raise AssertionError(f"streamed {self.sent!r} is not the beginning of the reply {final!r}")
        delta, self.sent = final[len(self.sent):], final
        return delta

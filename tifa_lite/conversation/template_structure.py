"""What a chat template writes around each message, read off by rendering it.

Ollama wants the template as a Go template, and Ollama, llama.cpp and our own generation
need the tokens that end a turn. Neither can be had by translating the Jinja: no library
converts Jinja to Go templates, and a chat template is a program. So, like llama.cpp's own
template probing, we render it on marker messages and read off what it puts before and
after each role's content, the block it adds when no system message is given (Qwen's
default system prompt), and the generation prompt. :func:`check_regular` re-assembles a
conversation from the parts and compares it with the Jinja output, so a template that
is not this regular (one that reorders messages, or wraps a message differently by its
position) is refused, never guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tifa_lite.errors import TifaError

ROLES = ("system", "user", "assistant")


class TemplateShapeError(TifaError):
    """The chat template cannot be described as per-role prefix + content + suffix."""


def _mark(role: str, n: int) -> str:
    # Plain letters survive any template filter (trim, capitalise first letter is rare) and
    # never occur in a real template's text.
    return f"qq{role}mark{n}qq"


@dataclass(frozen=True)
class TemplateStructure:
    # Text before the first message when the conversation opens with a system message
    # (BOS, if the template writes it) and when it does not (BOS + any default system block).
    # None: the template refuses a system turn (ziya: the model was trained without one).
    header_with_system: str | None
    header_without_system: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation_prompt: str
    bos_token: str | None

    @property
    def has_system(self) -> bool:
        return self.header_with_system is not None

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation assembled from the parts (what the Jinja should have written)."""
        system_first = bool(messages) and messages[0]["role"] == "system"
        if system_first and not self.has_system:
            raise TemplateShapeError("this chat template has no system turn")
        out = [self.header_with_system if system_first else self.header_without_system]
        for m in messages:
            out.append(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]])
        if add_generation_prompt:
            out.append(self.generation_prompt)
        return "".join(out)


def _render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _split(block: str, marker: str, what: str) -> tuple[str, str]:
    if block.count(marker) != 1:
        raise TemplateShapeError(f"chat template: the {what} does not appear once in its own turn")
    before, _, after = block.partition(marker)
    return before, after


def analyse(tokenizer) -> TemplateStructure:
    """Per-role prefix/suffix, headers and generation prompt of ``tokenizer.chat_template``."""
    if not tokenizer.chat_template:
        raise TemplateShapeError("the tokenizer has no chat template")
    u1, a1, u2, a2, s = (_mark("user", 1), _mark("assistant", 1), _mark("user", 2), _mark("assistant", 2),
                         _mark("system", 1))
    conv = [{"role": "user", "content": u1}, {"role": "assistant", "content": a1},
            {"role": "user", "content": u2}, {"role": "assistant", "content": a2}]
    try:
        renders = [_render(tokenizer, conv[:k]) for k in range(1, len(conv) + 1)]
        prompt = _render(tokenizer, conv[:1], add_generation_prompt=True)
    except Exception as exc:  # a template may raise_exception() on a probe it dislikes
        raise TemplateShapeError(f"chat template failed on a plain user/assistant conversation: {exc}") from None
    try:
        with_system = _render(tokenizer, [{"role": "system", "content": s}, conv[0]])
    except Exception:  # a template that refuses a system turn (ziya) raises; it simply has none
        with_system = None
    for shorter, longer in zip(renders, renders[1:]):
        if not longer.startswith(shorter):
            raise TemplateShapeError("chat template rewrites earlier turns when a turn is added")
    prefix, suffix = {}, {}
    # The second user/assistant turns are rendered in the middle of a conversation: their
    # block is exactly prefix + content + suffix.
    prefix["user"], suffix["user"] = _split(renders[2][len(renders[1]):], u2, "user content")
    prefix["assistant"], suffix["assistant"] = _split(renders[3][len(renders[2]):], a2, "assistant content")
    first_user = prefix["user"] + u1 + suffix["user"]
    if not renders[0].endswith(first_user):
        # A separator written before every user turn but the first (ziya's "\n" between a
        # reply's </s> and the next <human>:) closes the reply before it: the assistant's suffix
        # whenever a turn follows, which is the only place a prompt ever has one.
        sep = next((prefix["user"][:k] for k in range(1, len(prefix["user"]))
                    if renders[0].endswith(prefix["user"][k:] + u1 + suffix["user"])), None)
        if sep is None:
            raise TemplateShapeError("chat template wraps the first user turn differently from later ones")
        prefix["user"] = prefix["user"][len(sep):]
        suffix["assistant"] += sep
        first_user = prefix["user"] + u1 + suffix["user"]
    header_without_system = renders[0][: -len(first_user)]
    sys_open, sys_close = None, ""
    if with_system is not None:
        if not with_system.endswith(first_user):
            raise TemplateShapeError("chat template wraps a user turn after a system turn differently")
        sys_open, sys_close = _split(with_system[: -len(first_user)], s, "system content")
    # The system turn's own prefix cannot be told apart from the header before it; they
    # always appear together (a system message comes first), so it is kept in the header.
    prefix["system"], suffix["system"] = "", sys_close
    if not prompt.startswith(renders[0]):
        raise TemplateShapeError("chat template changes the conversation when asked for a generation prompt")
    bos = getattr(tokenizer, "bos_token", None)
    return TemplateStructure(
        header_with_system=sys_open,
        header_without_system=header_without_system,
        prefix=prefix,
        suffix=suffix,
        generation_prompt=prompt[len(renders[0]):],
        bos_token=bos,
    )


SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are Tifa, a bartender in Midgar."},
    {"role": "user", "content": "Hi! Who are you?"},
    {"role": "assistant", "content": "I'm Tifa. What can I get you?"},
    {"role": "user", "content": "Something strong, please."},
]


def check_regular(tokenizer, structure: TemplateStructure, conversations: list[list[dict[str, str]]] | None = None) -> None:
    """Raise unless the parts re-assemble the Jinja output exactly, with and without a system turn."""
    samples = conversations or [SAMPLE_CONVERSATION, SAMPLE_CONVERSATION[1:]]
    for messages in samples:
        if not structure.has_system and messages and messages[0]["role"] == "system":
            continue  # the template refuses this conversation itself
        expected = _render(tokenizer, messages, add_generation_prompt=True)
        got = structure.render(messages)
        if got != expected:
            raise TemplateShapeError(
                "chat template is not per-role prefix + content + suffix on a sample conversation:\n"
                f"  template: {expected!r}\n  parts:    {got!r}"
            )


def _special_tokens(tokenizer) -> list[str]:
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            found.add(str(token))
    return sorted(found, key=len, reverse=True)


def end_of_turn_tokens(tokenizer, structure: TemplateStructure | None = None) -> list[str]:
    """Special tokens that close an assistant turn, plus EOS: the stop words of Ollama and
    llama.cpp and the extra EOS ids of our own generation."""
    structure = structure or analyse(tokenizer)
    closing = structure.suffix["assistant"]
    tokens = [t for t in _special_tokens(tokenizer) if t in closing]
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in tokens:
        tokens.append(eos)
    return tokens


def end_of_turn_ids(tokenizer, model_eos: Any = None) -> list[int]:
    """Token ids that end a reply: the model's EOS and the template's end-of-turn tokens.
    A template that cannot be probed falls back to the model's EOS alone."""
    ids = list(model_eos if isinstance(model_eos, (list, tuple)) else [model_eos] if model_eos is not None else [])
    try:
        tokens = end_of_turn_tokens(tokenizer)
    except TemplateShapeError:
        tokens = [tokenizer.eos_token] if tokenizer.eos_token else []
    for token in tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id not in ids:
            ids.append(token_id)
    return ids

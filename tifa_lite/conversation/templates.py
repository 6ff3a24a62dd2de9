"""Named chat templates and the ``<think>`` history policy.

The policy (``model.think_policy``): ``auto`` (the default) and ``strip`` remove every
``<think>…</think>`` block from the assistant turns that come before the last user turn,
so history sent back to the model carries answers only (as the Tifa and DeepSeek-R1
templates do), while the turn being trained on, or generated, keeps its reasoning.
``keep`` leaves history untouched. :func:`apply_think_policy` is the one function that
applies it; SFT data, DPO pair prompts, GRPO prompts and the chat session all call it
(through :class:`ConversationRules` for data sets, which also counts and logs what it
removed).

The policy is applied twice on purpose: to the messages themselves (so it holds for a
tokenizer's own template) and inside the Jinja of our named templates (so an exported
model behaves the same in any runtime).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from tifa_lite.config.schema import ModelConfig, ThinkPolicy
from tifa_lite.errors import ConfigError, DataError

log = logging.getLogger(__name__)

THINK_BLOCK_RE = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
THINK_POLICIES = get_args(ThinkPolicy)

# Jinja prelude shared by our templates: index of the last user turn.
_PRELUDE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
)
_IN_HISTORY = "STRIP and message['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in content"
# Removes each <think>…</think> block (and the whitespace after it) and nothing else: the
# Jinja twin of THINK_BLOCK_RE, written with split() because Jinja has no regex.
_STRIP_BLOCKS = (
    "{%- set content = message['content'] -%}"
    "{%- if " + _IN_HISTORY + " -%}"
    "{%- set t = namespace(out='', after=false) -%}"
    "{%- for part in content.split('</think>') -%}"
    "{%- set p = part.lstrip() if t.after else part -%}"
    "{%- if loop.last -%}{%- set t.out = t.out + p -%}"
    "{%- elif '<think>' in p -%}{%- set t.out = t.out + p.split('<think>')[0] -%}{%- set t.after = true -%}"
    "{%- else -%}{%- set t.out = t.out + p + '</think>' -%}{%- set t.after = false -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set content = t.out -%}"
    "{%- endif -%}"
)
# DeepSeek-R1's own rule: history keeps what follows the last </think> (its generation
# prompt opens the think block, so a stored reply may hold a </think> with no <think>).
_AFTER_LAST_THINK = (
    "{%- set content = message['content'] -%}"
    "{%- if " + _IN_HISTORY + " -%}{%- set content = content.split('</think>')[-1].lstrip() -%}{%- endif -%}"
)

_CHATML = (
    _PRELUDE
    + "{%- if messages[0]['role'] != 'system' and DEFAULT_SYSTEM -%}"
    "{{ '<|im_start|>system\\n' + DEFAULT_SYSTEM + '<|im_end|>\\n' }}{%- endif -%}"
    "{%- for message in messages -%}" + _STRIP_BLOCKS
    + "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_DEEPSEEK_R1 = (
    _PRELUDE
    + "{{ bos_token }}"
    "{%- for message in messages -%}" + _AFTER_LAST_THINK
    + "{%- if message['role'] == 'system' -%}{{ content }}"
    "{%- elif message['role'] == 'user' -%}{{ '<｜User｜>' + content }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<｜Assistant｜><think>\\n' }}{%- endif -%}"
)

# Ziya-LLaMA, as its model card builds the input: '<human>:' + query.strip() + '\n<bot>:'.
# It has no system turn. The answer is closed by EOS; the newline that separates it from
# the next query belongs to that query, so it is never trained as if it followed EOS.
ZIYA_NO_SYSTEM = "the ziya template has no system turn (Ziya was trained without one)"
_ZIYA = (
    _PRELUDE
    + "{%- for message in messages -%}" + _STRIP_BLOCKS
    + "{%- if message['role'] == 'system' -%}{{ raise_exception('" + ZIYA_NO_SYSTEM + "') }}"
    "{%- elif message['role'] == 'user' -%}{{ ('' if loop.first else '\\n') + '<human>:' + content.strip() + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<bot>:' + content + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<bot>:' }}{%- endif -%}"
)

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# name → (jinja body, default system prompt or None)
NAMED_TEMPLATES: dict[str, tuple[str, str | None]] = {
    "chatml": (_CHATML, None),
    "qwen": (_CHATML, QWEN_SYSTEM),
    "tifa": (_CHATML, None),
    "deepseek_r1": (_DEEPSEEK_R1, None),
    "ziya": (_ZIYA, None),
}
# Templates whose model was trained without a system turn: a system message is refused.
NO_SYSTEM_TEMPLATES = {"ziya"}


def render_named_template(name: str, strip_think: bool = True) -> str:
    body, default_system = NAMED_TEMPLATES[name]
    system = repr(default_system) if default_system else "''"
    return f"{{%- set STRIP = {str(strip_think).lower()} -%}}{{%- set DEFAULT_SYSTEM = {system} -%}}" + body


def think_policy_strips(policy: str | bool) -> bool:
    """``auto``/``strip``/True remove earlier reasoning; ``keep``/False leave it."""
    if isinstance(policy, bool):
        return policy
    if policy not in THINK_POLICIES:
        raise ConfigError(f"think_policy={policy!r}: use one of {', '.join(THINK_POLICIES)}.")
    return policy != "keep"


def strips_think(model_cfg: ModelConfig) -> bool:
    return think_policy_strips(model_cfg.think_policy)


def apply_chat_template_choice(tokenizer, model_cfg: ModelConfig) -> None:
    """Set tokenizer.chat_template from the recipe (None keeps the tokenizer's own)."""
    choice = model_cfg.chat_template
    if choice is None:
        if not tokenizer.chat_template:
            raise ConfigError(
                f"model.chat_template: {model_cfg.name_or_path} ships no chat template; "
                f"pick one of {', '.join(NAMED_TEMPLATES)} or give a .jinja path."
            )
        return
    if choice in NAMED_TEMPLATES:
        tokenizer.chat_template = render_named_template(choice, strips_think(model_cfg))
        return
    path = Path(choice)
    if path.suffix == ".jinja" and path.is_file():
        tokenizer.chat_template = path.read_text(encoding="utf-8")
        return
    import difflib

    close = difflib.get_close_matches(choice, list(NAMED_TEMPLATES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"model.chat_template={choice!r}: unknown template{hint}. Use one of "
        f"{', '.join(NAMED_TEMPLATES)}, a path to a .jinja file, or null for the tokenizer's own."
    )


def apply_think_policy(messages: list[dict], policy: str | bool = "auto") -> list[dict]:
    """The ``<think>`` history policy: with ``auto``/``strip`` (or True), every
    ``<think>…</think>`` block is removed from assistant turns before the last user turn;
    ``keep`` (or False) returns the messages unchanged. Never modifies its input."""
    if not think_policy_strips(policy):
        return messages
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    out = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if m.get("role") == "assistant" and i < last_user and isinstance(content, str) and "</think>" in content:
            m = {**m, "content": THINK_BLOCK_RE.sub("", content)}
        out.append(m)
    return out


@dataclass
class ConversationRules:
    """What the recipe's ``model:`` section asks of every conversation of a data set before
    it is rendered: the ``<think>`` history policy, and no system turn for a template that
    has none. Counts the conversations whose history lost reasoning, for one log line."""

    model: ModelConfig
    stripped: int = 0
    seen: int = 0

    def __call__(self, messages: list[dict], where: str) -> list[dict]:
        if self.model.chat_template in NO_SYSTEM_TEMPLATES and messages and messages[0].get("role") == "system":
            raise DataError(
                f"{where}: a system message, but {ZIYA_NO_SYSTEM}. Remove the system turn "
                "(and data.system_prompt) or pick another model.chat_template."
            )
        out = apply_think_policy(messages, self.model.think_policy)
        self.seen += 1
        self.stripped += out != messages
        return out

    def log(self, what: str) -> None:
        if self.stripped:
            log.info(
                "%s: model.think_policy=%s removed <think>…</think> from earlier assistant turns in %d of %d "
                "conversations (model.think_policy=keep keeps them)",
                what, self.model.think_policy, self.stripped, self.seen,
            )

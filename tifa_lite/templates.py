"""Named chat templates and the ``<think>`` history policy.

``strip``: ``<think>…</think>`` is removed from every assistant turn that comes before
the last user turn — so history sent back to the model carries answers only (as the
Tifa and DeepSeek-R1 templates do), while the turn being trained on, or generated,
keeps its reasoning. ``keep`` leaves history untouched.

The policy is applied twice on purpose: inside the Jinja of our named templates (so an
exported model behaves the same in any runtime) and to the messages themselves
(:func:`apply_think_policy`) so it also holds for a tokenizer's own template.
"""

from __future__ import annotations

import re
from pathlib import Path

from tifa_lite.config.schema import ModelConfig
from tifa_lite.errors import ConfigError

THINK_RE = re.compile(r"<think>.*?</think>\s*", re.DOTALL)

# Jinja prelude shared by our templates: index of the last user turn, and a macro that
# strips reasoning from assistant turns before it.
_PRELUDE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
)
_CONTENT = (
    "{%- set content = message['content'] -%}"
    "{%- if STRIP and message['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip() -%}"
    "{%- endif -%}"
)

_CHATML = (
    _PRELUDE
    + "{%- if messages[0]['role'] != 'system' and DEFAULT_SYSTEM -%}"
    "{{ '<|im_start|>system\\n' + DEFAULT_SYSTEM + '<|im_end|>\\n' }}{%- endif -%}"
    "{%- for message in messages -%}" + _CONTENT
    + "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_DEEPSEEK_R1 = (
    _PRELUDE
    + "{{ bos_token }}"
    "{%- for message in messages -%}" + _CONTENT
    + "{%- if message['role'] == 'system' -%}{{ content }}"
    "{%- elif message['role'] == 'user' -%}{{ '<｜User｜>' + content }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<｜Assistant｜>' }}{%- endif -%}"
)

# Ziya-LLaMA: "<human>:" / "<bot>:" turns, the answer closed by EOS.
_ZIYA = (
    _PRELUDE
    + "{%- for message in messages -%}" + _CONTENT
    + "{%- if message['role'] == 'system' -%}{{ content + '\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '<human>:' + content + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<bot>:' + content + eos_token + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<bot>:' }}{%- endif -%}"
)

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# name → (jinja body, default system prompt or None, strips <think> by default)
NAMED_TEMPLATES: dict[str, tuple[str, str | None, bool]] = {
    "chatml": (_CHATML, None, False),
    "qwen": (_CHATML, QWEN_SYSTEM, False),
    "tifa": (_CHATML, None, True),
    "deepseek_r1": (_DEEPSEEK_R1, None, True),
    "ziya": (_ZIYA, None, False),
}
REASONING_TEMPLATES = {name for name, (_, _, strips) in NAMED_TEMPLATES.items() if strips}


def render_named_template(name: str, strip_think: bool | None = None) -> str:
    body, default_system, strips = NAMED_TEMPLATES[name]
    strip = strips if strip_think is None else strip_think
    system = repr(default_system) if default_system else "''"
    return f"{{%- set STRIP = {str(strip).lower()} -%}}{{%- set DEFAULT_SYSTEM = {system} -%}}" + body


def strips_think(model_cfg: ModelConfig) -> bool:
    if model_cfg.think_policy != "auto":
        return model_cfg.think_policy == "strip"
    return model_cfg.chat_template in REASONING_TEMPLATES


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


def apply_think_policy(messages: list[dict], strip: bool) -> list[dict]:
    """Drop <think>…</think> from assistant turns before the last user turn."""
    if not strip:
        return messages
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    out = []
    for i, m in enumerate(messages):
        if m.get("role") == "assistant" and i < last_user and "</think>" in m.get("content", ""):
            m = {**m, "content": m["content"].split("</think>")[-1].lstrip()}
        out.append(m)
    return out

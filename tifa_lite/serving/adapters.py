"""Many characters on one base: ``serve --model BASE --adapter NAME=PATH …``.

The base is loaded once; every adapter is loaded into one ``PeftModel`` under its NAME
(``load_adapter``), and a request picks its character with ``model``. Rows of different
characters share a batch through PEFT's mixed-adapter forward (``adapter_names``, the base as
``"__base__"``), so switching characters never reloads anything. Each character is a
:class:`Persona`: a ``ChatSession`` over the shared model with the adapter run's own tokenizer
and chat template, sampling (``tifa_sampling.json``/``resolved_config.yaml``) and ``<think>``
policy (its ``model.think_policy``); the command line's sampling flags apply to all of them.

:func:`parity` is the per-character check in the style of ``export check``: the adapter as
served (mixed-adapter forward on the shared base) against the same adapter merged into its own
copy of the base, on held-out prompts — greedy tokens and the KL divergence of the next-token
distributions.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class Persona:
    model_id: str
    session: Any  # ChatSession over the shared model, with this character's template and sampling
    adapter: str | None  # the PEFT adapter name; None: the base (or the one adapter of a plain serve)


def parse_adapters(values: list[str] | None) -> tuple[str | None, dict[str, Path]]:
    """(a plain ``--adapter PATH``, or the ``NAME=PATH`` adapters by name)."""
    values = values or []
    named = [v for v in values if "=" in v]
    plain = [v for v in values if "=" not in v]
    if plain and (named or len(plain) > 1):
        raise ConfigError("--adapter: give one adapter folder, or name each one as NAME=PATH "
                          f"(got {', '.join(values)})")
    adapters: dict[str, Path] = {}
    for value in named:
        name, _, path = value.partition("=")
        if not _NAME.match(name) or name == BASE:
            raise ConfigError(f"--adapter {value}: the name {name!r} must be letters, digits, '.', '_' or '-' "
                              "(it is the model id clients send)")
        if name in adapters:
            raise ConfigError(f"--adapter {value}: the name {name!r} is given twice")
        folder = Path(path).expanduser().resolve()
        if not (folder / "adapter_config.json").is_file():
            raise ConfigError(f"--adapter {value}: {folder} has no adapter_config.json, so it is not a LoRA adapter "
                              "folder")
        adapters[name] = folder
    return (plain[0] if plain else None), adapters


def attach(session, adapters: dict[str, Path], *, recipe: str | None = None, preset: str | None = None,
           keep_think: bool | None = None, **sampling: Any) -> list[Persona]:
    """Load ``adapters`` onto ``session``'s base (in place: ``session.model`` becomes the
    ``PeftModel``) and return one persona per adapter."""
    from peft import PeftModel

    names = list(adapters)
    model = PeftModel.from_pretrained(session.model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    model.eval()
    session.model = model
    return [Persona(name, persona_session(session, adapters[name], recipe=recipe, preset=preset,
                                          keep_think=keep_think, **sampling), name) for name in names]


def persona_session(base_session, adapter_dir: Path, *, recipe=None, preset=None, keep_think=None, **sampling):
    """A session for one adapter over the shared model: the run's tokenizer (its chat
    template), sampling and think policy."""
    from tifa_lite.conversation.session import ChatSession, resolve_sampling
    from tifa_lite.conversation.templates import think_policy_strips

    tokenizer, policy = run_tokenizer(adapter_dir, base_session.tokenizer, keep_think)
    model_dir = Path(getattr(base_session.model.config, "_name_or_path", "") or ".")
    resolved = resolve_sampling(model_dir, adapter_dir, recipe, preset, **sampling)
    return ChatSession(base_session.model, tokenizer, resolved, system=None, strip_think=think_policy_strips(policy),
                       seed=base_session.seed, generation_lock=base_session.generation_lock)


def run_tokenizer(adapter_dir: Path, base_tokenizer, keep_think: bool | None = None) -> tuple[Any, str]:
    """(the tokenizer a character's run trained with, its chat template applied; its think
    policy) — the same for every engine."""
    from transformers import AutoTokenizer

    from tifa_lite.config.schema import ModelConfig
    from tifa_lite.conversation.templates import apply_chat_template_choice
    from tifa_lite.modeling.inference import base_fields_from_adapter

    fields = base_fields_from_adapter(adapter_dir)
    if (adapter_dir / "tokenizer_config.json").is_file():  # the run saved the tokenizer it trained with
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer = copy.copy(base_tokenizer)
    policy = "keep" if keep_think else fields.get("think_policy", "auto")
    if fields.get("chat_template"):
        apply_chat_template_choice(tokenizer, ModelConfig(name_or_path=fields.get("name_or_path") or "base",
                                                          chat_template=fields["chat_template"], think_policy=policy))
    return tokenizer, policy


# Held-out prompts when none are given: role-play openings no training set here contains.
DEFAULT_PROMPTS = [
    [{"role": "user", "content": "The tavern door bangs open in the storm. Who are you, stranger?"}],
    [{"role": "user", "content": "Tell me what you remember about the day we met."}],
    [{"role": "system", "content": "Stay in character."}, {"role": "user", "content": "Why should I trust you?"}],
]


def read_prompts(path: str | Path | None, limit: int = 4) -> list[list[dict[str, str]]]:
    """Conversations up to their last user turn, from a messages JSONL (or the defaults)."""
    if path is None:
        return DEFAULT_PROMPTS[:limit]
    from tifa_lite.export.parity import load_prompts  # the same reading as `export check`

    return load_prompts(path, limit)


def check_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'model':<20} {'prompts':>7} {'greedy same':>11} {'argmax agree':>12} {'KL mean':>9} {'KL max':>9}"]
    for r in rows:
        lines.append(f"{r['model']:<20} {r['prompts']:>7} {r['greedy_same']:>11} {r['argmax_agree']:>12.3f} "
                     f"{r['kl_mean']:>9.2e} {r['kl_max']:>9.2e}")
    return "\n".join(lines)


def merged_copy(base: str | Path, adapter_dir: Path):
    """The adapter merged into its own fresh copy of the base (what ``tifa-lite merge`` serves)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tifa_lite.modeling.embedded import embedded_checkpoint, is_embedded

    path = embedded_checkpoint(str(base)) if is_embedded(str(base)) else base
    model = AutoModelForCausalLM.from_pretrained(str(path))
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload().eval()


def parity(persona: Persona, merged, prompts: list[list[dict[str, str]]], max_new_tokens: int = 16) -> dict[str, Any]:
    """The served adapter against the merged one on ``prompts`` (conversations): how many
    greedy continuations are token-for-token the same, the share of positions whose argmax
    agrees, and the mean and largest KL(merged ‖ served) of the next-token distributions
    along the merged model's greedy continuation."""
    import torch

    session = persona.session
    same, agree, positions, kls = 0, 0, 0, []
    for messages in prompts:
        inputs = session.prompt_ids(messages)
        ids = inputs["input_ids"].to(merged.device)
        with torch.no_grad():
            out = merged.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                  do_sample=False, pad_token_id=session.tokenizer.pad_token_id)
            full = out[:, :]
            reference = torch.log_softmax(merged(full).logits[0, ids.shape[1] - 1:-1].float(), -1)
            served = session.model(full, adapter_names=[persona.adapter or BASE]).logits[0, ids.shape[1] - 1:-1]
            served = torch.log_softmax(served.float(), -1)
        kl = (reference.exp() * (reference - served)).sum(-1)
        kls += kl.tolist()
        agree += int((reference.argmax(-1) == served.argmax(-1)).sum())
        positions += kl.numel()
        served_ids, _ = _served_greedy(session, persona, ids, max_new_tokens)
        same += int(served_ids == out[0, ids.shape[1]:].tolist())
    return {"model": persona.model_id, "prompts": len(prompts), "greedy_same": same,
            "argmax_agree": agree / max(positions, 1), "kl_mean": sum(kls) / max(len(kls), 1),
            "kl_max": max(kls, default=0.0)}


def _served_greedy(session, persona: Persona, ids, max_new_tokens: int):
    """Greedy tokens from the shared model with only this persona's adapter on."""
    import torch

    with torch.no_grad():
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                     do_sample=False, pad_token_id=session.tokenizer.pad_token_id,
                                     adapter_names=[persona.adapter or BASE])
    return out[0, ids.shape[1]:].tolist(), out

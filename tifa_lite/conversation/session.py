"""Talk to a model or a trained adapter: ``chat(model, adapter=None) -> ChatSession``.

>>> import tifa_lite
>>> s = tifa_lite.chat("outputs/merged")    # or chat("smollm2-135m-instruct", adapter="outputs/sft")
>>> s.say("Hello, Sheldon.")

Sampling, lowest to highest precedence: our defaults → the model folder's
``generation_config.json`` → the recipe's ``sampling:`` (``tifa_sampling.json`` or
``resolved_config.yaml`` beside an adapter, or ``recipe=``) → ``preset=`` → keyword
arguments. The history sent back to the model has ``<think>…</think>`` removed from
earlier answers (:func:`tifa_lite.conversation.templates.apply_think_policy`, the one function every
renderer of conversations calls); ``session.history`` keeps the full replies.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError
from tifa_lite.modeling.inference import load_inference_model

log = logging.getLogger(__name__)

SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty",
                 "max_new_tokens")

# Tifa's published recommendation for role-play models.
SAMPLING_PRESETS: dict[str, dict[str, Any]] = {
    "tifa": {"do_sample": True, "temperature": 0.4, "top_p": 0.6, "repetition_penalty": 1.17, "max_new_tokens": 1536},
    "greedy": {"do_sample": False, "repetition_penalty": 1.0},
}


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    # "stop" (end of turn or a stop string), "length" (max_new_tokens reached) or "cancelled"
    # (``cancel`` was set: the client left, nobody reads the reply)
    finish_reason: str


@dataclass
class ChatSession:
    model: Any
    tokenizer: Any
    sampling: dict[str, Any]
    system: str | None = None
    strip_think: bool = True
    history: list[dict[str, str]] = field(default_factory=list)
    seed: int | None = None
    # One model, one set of weights: reply() holds it, so the server's worker and the web
    # page's threads never run two generations at once.
    generation_lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    def messages_for_model(self, text: str | None = None) -> list[dict[str, str]]:
        from tifa_lite.conversation.templates import apply_think_policy

        messages = ([{"role": "system", "content": self.system}] if self.system else []) + list(self.history)
        if text is not None:
            messages.append({"role": "user", "content": text})
        return apply_think_policy(messages, self.strip_think)

    def say(self, text: str, stream: bool = False, **sampling: Any) -> str:
        """Send one user turn and return the reply (also appended to ``history``)."""
        streamer = None
        if stream:
            from transformers import TextStreamer

            streamer = TextStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        reply = self.reply(self.messages_for_model(text), streamer=streamer, **sampling).text
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        return reply

    def prompt_ids(self, messages: list[dict[str, str]]):
        """The token ids the model sees for ``messages`` (think policy applied), ready to answer."""
        from tifa_lite.conversation.templates import apply_think_policy

        return self.tokenizer.apply_chat_template(
            apply_think_policy(messages, self.strip_think), add_generation_prompt=True,
            return_tensors="pt", return_dict=True,
        )

    def reply(self, messages: list[dict[str, str]], streamer: Any = None, stop: list[str] | None = None,
              presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
              logit_bias: dict[str, float] | None = None, cancel: threading.Event | None = None,
              **sampling: Any) -> "Reply":
        """Answer a whole conversation without touching ``history``: the path the terminal chat,
        the OpenAI-compatible server and the web page share. ``presence_penalty``,
        ``frequency_penalty`` and ``logit_bias`` follow OpenAI's definitions; setting ``cancel``
        (another thread) ends the generation at the next token."""
        with self.generation_lock:
            return self._reply(messages, streamer, stop, presence_penalty, frequency_penalty, logit_bias, cancel,
                               **sampling)

    def _reply(self, messages, streamer, stop, presence_penalty, frequency_penalty, logit_bias, cancel,
               **sampling: Any) -> "Reply":
        from tifa_lite.conversation.reply_text import decode, final_text

        inputs = self.prompt_ids(messages)
        prompt_len = inputs["input_ids"].shape[1]
        if cancel is not None and cancel.is_set():  # left before its turn came: never start
            if streamer is not None:
                streamer.end()
            return Reply(text="", prompt_tokens=prompt_len, completion_tokens=0, finish_reason="cancelled")
        output, kwargs = self.generate_tokens(inputs, streamer, stop, presence_penalty, frequency_penalty, logit_bias,
                                              cancel, **sampling)
        new = output[0, prompt_len:]
        text, hit_stop = final_text(decode(self.tokenizer, new), stop, think_open=self.opens_think(messages))
        ended = len(new) > 0 and int(new[-1]) in set(kwargs["eos_token_id"])
        limit = kwargs.get("max_new_tokens")
        at_limit = limit is not None and len(new) >= limit and not (ended or hit_stop)
        finish = "cancelled" if cancel is not None and cancel.is_set() else "length" if at_limit else "stop"
        return Reply(text=text, prompt_tokens=prompt_len, completion_tokens=len(new), finish_reason=finish)

    def opens_think(self, messages: list[dict[str, str]]) -> bool:
        """Whether the generation prompt opens a ``<think>`` block (deepseek_r1), so the reply
        is its continuation."""
        from tifa_lite.conversation.templates import apply_think_policy

        prompt = self.tokenizer.apply_chat_template(
            apply_think_policy(messages, self.strip_think), add_generation_prompt=True, tokenize=False,
        )
        return prompt.rstrip().endswith("<think>")

    def generate_tokens(self, inputs, streamer: Any = None, stop: list[str] | None = None,
                        presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                        logit_bias: dict[str, float] | None = None, cancel: threading.Event | None = None,
                        logits_processors: tuple = (), stopping: tuple = (), n: int = 1, **sampling: Any):
        """``generate`` for tokenised ``inputs`` with the session's sampling under ``sampling``
        and ``n`` replies in one batch: (the output ids, prompt included; the kwargs generate
        got). The caller holds ``generation_lock``."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from tifa_lite.conversation.logits import OpenAIPenalties, StopWhenSet, sequence_bias
        from tifa_lite.conversation.template_structure import end_of_turn_ids

        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        kwargs = generation_kwargs({**self.sampling, **sampling})
        if n > 1 and kwargs["do_sample"]:
            kwargs["num_return_sequences"] = n
        elif n > 1:  # greedy refuses num_return_sequences; n identical rows give the n identical replies
            inputs = {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in inputs.items()}
        # Stop at the template's end of turn too: a chat template may close a turn with a token
        # that is not the model's EOS (a base given a ChatML template), and it would run on.
        kwargs["eos_token_id"] = end_of_turn_ids(self.tokenizer, self.model.generation_config.eos_token_id)
        if streamer is not None:
            kwargs["streamer"] = streamer
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        prompt_len = inputs["input_ids"].shape[1]
        processors = list(logits_processors)
        if presence_penalty or frequency_penalty:
            processors.append(OpenAIPenalties(prompt_len, presence_penalty, frequency_penalty))
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        if logit_bias:
            kwargs["sequence_bias"] = sequence_bias(logit_bias, self.vocab_size())
        criteria = list(stopping) + ([StopWhenSet(cancel)] if cancel is not None else [])
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        seed = sampling.get("seed", self.seed)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            output = self.model.generate(**inputs, pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        return output, kwargs

    def vocab_size(self) -> int:
        """How many token ids the model scores (``logit_bias`` ids must be below it)."""
        embeddings = self.model.get_output_embeddings()
        return int(embeddings.weight.shape[0]) if embeddings is not None else len(self.tokenizer)

    def reset(self) -> None:
        self.history.clear()


def generation_kwargs(sampling: dict[str, Any]) -> dict[str, Any]:
    """Only the keys generate() should see; greedy drops the sampling-only ones so
    transformers does not warn that they are ignored."""
    out = {k: v for k, v in sampling.items() if k in SAMPLING_KEYS and v is not None}
    out.setdefault("do_sample", out.get("temperature", 1.0) > 0)
    if out.get("temperature") == 0:
        out["do_sample"] = False
    if not out["do_sample"]:
        for key in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
            out.pop(key, None)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _recipe_sampling(folder: Path) -> dict[str, Any]:
    """What a training run recorded beside its adapter or merged model."""
    found = _read_json(folder / "tifa_sampling.json")
    if found:
        return found
    resolved = folder / "resolved_config.yaml"
    if resolved.is_file():
        import yaml

        data = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
        return dict(data.get("sampling") or {})
    return {}


def resolve_sampling(
    model_dir: Path,
    adapter_dir: Path | None = None,
    recipe: str | Path | None = None,
    preset: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    from tifa_lite.config.schema import SamplingConfig

    sampling: dict[str, Any] = SamplingConfig().model_dump()
    generation_config = _read_json(model_dir / "generation_config.json")
    sampling.update({k: v for k, v in generation_config.items() if k in SAMPLING_KEYS})
    sampling.update(_recipe_sampling(model_dir))
    if adapter_dir is not None:
        sampling.update(_recipe_sampling(adapter_dir))
    if recipe is not None:
        from tifa_lite.config import load_recipe

        sampling.update(load_recipe(recipe).sampling.model_dump())
    if preset is not None:
        if preset not in SAMPLING_PRESETS:
            raise ConfigError(f"sampling preset {preset!r}: unknown; choose one of {', '.join(SAMPLING_PRESETS)}.")
        sampling.update(SAMPLING_PRESETS[preset])
    sampling.update({k: v for k, v in overrides.items() if v is not None})
    return {k: v for k, v in sampling.items() if k in SAMPLING_KEYS}


def chat(
    model: str | Path | None = None,
    adapter: str | Path | None = None,
    *,
    system: str | None = None,
    recipe: str | Path | None = None,
    preset: str | None = None,
    chat_template: str | None = None,
    think_policy: str = "auto",
    bits: int | None = None,
    seed: int | None = None,
    **sampling: Any,
) -> ChatSession:
    """A chat session with ``model`` (folder, embedded name, hub id) or, when None, the base
    named by the adapter's run. ``sampling`` keys: temperature, top_p, top_k, min_p, repetition_penalty,
    max_new_tokens, do_sample. ``preset="tifa"`` is Tifa's recommended role-play sampling.
    ``think_policy``: "keep" sends earlier <think> blocks back; "auto"/"strip" remove them."""
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise ConfigError(f"chat(): unknown sampling keys {unknown}; valid: {', '.join(SAMPLING_KEYS)}.")
    lm, tokenizer, model_dir, adapter_dir, _ = load_inference_model(
        model, adapter, chat_template=chat_template, think_policy=think_policy, bits=bits
    )
    resolved = resolve_sampling(model_dir, adapter_dir, recipe, preset, **sampling)
    log.info("sampling: %s", resolved)
    from tifa_lite.conversation.templates import think_policy_strips

    strip = think_policy_strips(think_policy)
    return ChatSession(lm, tokenizer, resolved, system=system, strip_think=strip, seed=seed)

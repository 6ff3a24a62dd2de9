"""What every serving engine serves the same way: the model's chat template, the recipe's
sampling as defaults, the request rules of :mod:`tifa_lite.serving.openai_api` and the
``<think>`` history policy — resolved once, from the model folder and the tokenizer alone
(the llama.cpp and vLLM engines load their own weights).

``engine_body`` turns a front end's request into the body an engine's own OpenAI-compatible
server reads, so a request that our server refuses with a 400 is refused the same way in
front of llama.cpp, and one it accepts reaches the engine with our defaults filled in.
:class:`NormalisedRequests` applies it to every ``POST /v1/chat/completions`` of an ASGI app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError

ENGINES = ("transformers", "llama.cpp", "vllm")


@dataclass(frozen=True)
class EngineSpec:
    model_id: str
    base: str  # what the engine loads: a folder or hub id (vLLM), the HF folder the GGUF came from
    adapter_dir: Path | None
    chat_template: str
    bos_token: str
    eos_token: str
    stop_token_ids: list[int]
    sampling: dict[str, Any]
    strip_think: bool = True
    system: str | None = None
    max_tokens_cap: int | None = None
    max_body_bytes: int = 4 * 2**20
    # llama-cpp-python's server answers one choice whatever `n` says: more is refused, not dropped.
    max_n: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def _base_name(model: str | None, adapter_dir: Path | None) -> str:
    if model:
        return model
    if adapter_dir is not None:
        from tifa_lite.modeling.inference import base_fields_from_adapter

        name = base_fields_from_adapter(adapter_dir).get("name_or_path")
        if not name:
            config = adapter_dir / "adapter_config.json"
            name = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path") if config.is_file() else None
        if name:
            return name
    raise ConfigError("give --model (a folder, an embedded name or a hub id), or an --adapter from a tifa_lite run.")


def engine_spec(model: str | None, adapter: str | None, model_id: str, *, chat_template: str | None = None,
                keep_think: bool = False, recipe: str | None = None, preset: str | None = None,
                system: str | None = None, max_tokens_cap: int | None = None,
                max_body_bytes: int = 4 * 2**20, **sampling: Any) -> EngineSpec:
    """The spec for ``model`` (embedded name, folder, hub id) and an optional adapter,
    reading only the tokenizer and the sampling files."""
    from transformers import AutoTokenizer

    from tifa_lite.config.schema import ModelConfig
    from tifa_lite.conversation.session import resolve_sampling
    from tifa_lite.conversation.template_structure import end_of_turn_ids
    from tifa_lite.conversation.templates import apply_chat_template_choice
    from tifa_lite.modeling.embedded import embedded_checkpoint, is_embedded

    adapter_dir = Path(adapter).expanduser().resolve() if adapter else None
    if adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"--adapter {adapter_dir}: no adapter_config.json, so this is not a LoRA adapter folder.")
    name = _base_name(model, adapter_dir)
    base = str(embedded_checkpoint(name)) if is_embedded(name) else name
    tokenizer_from = adapter_dir if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_from))
    policy = "keep" if keep_think else "strip"
    apply_chat_template_choice(tokenizer, ModelConfig(name_or_path=name, chat_template=chat_template, think_policy=policy))
    model_dir = Path(base)
    resolved = resolve_sampling(model_dir, adapter_dir, recipe, preset, **sampling)
    return EngineSpec(
        model_id=model_id, base=base, adapter_dir=adapter_dir, chat_template=tokenizer.chat_template,
        bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "",
        stop_token_ids=end_of_turn_ids(tokenizer, tokenizer.eos_token_id), sampling=resolved,
        strip_think=not keep_think, system=system, max_tokens_cap=max_tokens_cap, max_body_bytes=max_body_bytes,
    )


def character_spec(base_spec: EngineSpec, name: str, adapter_dir: Path, *, recipe: str | None = None,
                   preset: str | None = None, keep_think: bool | None = None, **sampling: Any) -> EngineSpec:
    """The spec of one ``--adapter NAME=PATH`` character over ``base_spec``'s base: its run's
    tokenizer and chat template, sampling and ``<think>`` policy, as the default engine's personas."""
    import dataclasses

    from transformers import AutoTokenizer

    from tifa_lite.conversation.session import resolve_sampling
    from tifa_lite.conversation.template_structure import end_of_turn_ids
    from tifa_lite.conversation.templates import think_policy_strips
    from tifa_lite.serving.adapters import run_tokenizer

    tokenizer, policy = run_tokenizer(adapter_dir, AutoTokenizer.from_pretrained(base_spec.base), keep_think)
    resolved = resolve_sampling(Path(base_spec.base), adapter_dir, recipe, preset, **sampling)
    return dataclasses.replace(
        base_spec, model_id=name, adapter_dir=adapter_dir, chat_template=tokenizer.chat_template,
        bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "",
        stop_token_ids=end_of_turn_ids(tokenizer, tokenizer.eos_token_id), sampling=resolved,
        strip_think=think_policy_strips(policy))


def engine_body(raw: bytes, spec: EngineSpec, penalty_key: str = "repetition_penalty") -> dict[str, Any]:
    """The request for an engine's own server, or :class:`BadRequest` as our server would
    answer. Every sampling key is explicit, so the engine's own defaults (llama.cpp's
    ``min_p`` 0.05, ``top_k`` 40, ``repeat_penalty`` 1.1) never apply in place of the recipe's."""
    from tifa_lite.conversation.templates import apply_think_policy
    from tifa_lite.serving.requests import conversation_turns, parse_request, template_renders_names

    request = parse_request(raw)
    turns = conversation_turns(request, template_renders_names(spec.chat_template), spec.system)
    messages = apply_think_policy(turns, spec.strip_think)
    body = _sampling_body(request, spec, penalty_key)
    body.update(messages=messages)
    if request.logprobs:
        body.update(logprobs=True, top_logprobs=request.top_logprobs or 0)
    return body


def engine_completion_body(raw: bytes, spec: EngineSpec, penalty_key: str = "repetition_penalty") -> dict[str, Any]:
    """The same for ``/v1/completions``: the prompt goes as sent (the client's own instruct
    template), with the recipe's sampling and our limits."""
    from tifa_lite.serving.requests import CompletionRequest, parse_request

    request = parse_request(raw, CompletionRequest)
    body = _sampling_body(request, spec, penalty_key)
    body["prompt"] = request.prompt
    if request.logprobs is not None:
        body["logprobs"] = request.logprobs
    return body


def _sampling_body(request, spec: EngineSpec, penalty_key: str) -> dict[str, Any]:
    from tifa_lite.serving.requests import BadRequest

    if (request.n or 1) > spec.max_n:
        raise BadRequest(f"n: up to {spec.max_n} replies per request with this engine; got {request.n}", param="n")
    asked = request.sampling()
    merged = {**spec.sampling, **asked}
    greedy = merged.get("do_sample") is False
    max_tokens = merged.get("max_new_tokens")
    if spec.max_tokens_cap and (max_tokens is None or max_tokens > spec.max_tokens_cap):
        max_tokens = spec.max_tokens_cap
    body: dict[str, Any] = {
        "model": spec.model_id, "stream": request.stream,
        "temperature": 0.0 if greedy else merged.get("temperature", 1.0),
        "top_p": merged.get("top_p") or 1.0, "top_k": merged.get("top_k") or 0, "min_p": merged.get("min_p") or 0.0,
        penalty_key: merged.get("repetition_penalty") or 1.0,
        "presence_penalty": request.presence_penalty or 0.0, "frequency_penalty": request.frequency_penalty or 0.0,
    }
    if max_tokens:
        body["max_tokens"] = max_tokens
    if request.stream and request.stream_options is not None:
        body["stream_options"] = {"include_usage": request.stream_options.include_usage}
    for key in ("stop", "seed", "logit_bias"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if merged.get("typical_p"):
        body["typical_p"] = merged["typical_p"]
    return body


ROUTES = {"/v1/chat/completions": engine_body, "/v1/completions": engine_completion_body}


class NormalisedRequests:
    """ASGI middleware: every ``POST /v1/chat/completions`` body goes through
    :func:`engine_body` and every ``POST /v1/completions`` through
    :func:`engine_completion_body`; a refused one is answered here with OpenAI's error shape."""

    def __init__(self, app, spec: EngineSpec, penalty_key: str = "repetition_penalty",
                 characters: dict[str, EngineSpec] | None = None):
        self.app, self.spec, self.penalty_key = app, spec, penalty_key
        self.specs = {spec.model_id: spec, **(characters or {})}

    def spec_for(self, raw: bytes) -> EngineSpec:
        """The spec of the model a request names (the rule of our own server: with one model
        served any name is it; with characters, an unknown name is a 404)."""
        from tifa_lite.serving.requests import BadRequest

        if len(self.specs) == 1:
            return self.spec
        try:
            model = json.loads(raw).get("model")
        except (ValueError, AttributeError):
            return self.spec  # the rewrite answers the malformed body with its own 400
        if model is None:
            return self.spec
        if model not in self.specs:
            raise BadRequest(f"model: {model!r} is not served here; choose one of {', '.join(self.specs)}",
                             param="model", status=404, kind="not_found_error")
        return self.specs[model]

    async def __call__(self, scope, receive, send):
        rewrite = ROUTES.get(scope["path"].rstrip("/")) if scope["type"] == "http" else None
        if rewrite is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        from tifa_lite.serving.requests import BadRequest, error_body

        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.spec.max_body_bytes:
                return await _json(send, 413, error_body(
                    f"the request body is over {self.spec.max_body_bytes} bytes (serve --max-body-bytes)"))
            if not message.get("more_body"):
                break
        try:
            raw = b"".join(chunks)
            body = json.dumps(rewrite(raw, self.spec_for(raw), self.penalty_key)).encode()
        except BadRequest as exc:
            return await _json(send, exc.status, error_body(exc.message, exc.kind, exc.param))
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, which the engine watches

        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, replay, send)


async def _json(send, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})

"""``/v1/chat/completions`` (streaming and not) and ``/v1/models`` for one loaded model.

Why not ``transformers serve`` (read in transformers 5.24, ``transformers/cli/serving``):
it loads a model by hub id or folder with ``AutoModel*.from_pretrained`` and the tokenizer's
own template, so it cannot take a LoRA adapter on a quantised base, our named templates
(``tifa``, ``deepseek_r1``, …) or embedded model names; it starts from the model's
``generation_config`` and raises ``max_new_tokens`` to at least 1024, so the recipe's
sampling (``repetition_penalty``, ``top_k``, ``max_new_tokens``) is not what it serves; it
leaves ``<think>`` blocks in the history; and a request without ``messages`` fails inside
it with a 500 (unknown fields get a 422). Adapting it would mean subclassing its internal
``ModelManager`` and handlers, which are not a public API. So: a small FastAPI app over
:class:`~tifa_lite.conversation.session.ChatSession`, which already renders and samples the way
training and ``tifa-lite chat`` do.

Requests are validated by a pydantic model; anything wrong is a 400 with OpenAI's error
shape (``{"error": {"message", "type", "param", "code"}}``), never a 500. Generations run
one at a time on a single worker thread (one model, one set of weights), so concurrent
requests queue instead of fighting over the cores; a failed generation answers that request
with a 500 and the server goes on.
"""

# No `from __future__ import annotations`: FastAPI reads the route's `request: Request`
# annotation at runtime, and Request is imported inside build_app (fastapi is an extra).
import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    # Not in OpenAI's schema, but sent by role-play clients (SillyTavern) and in our recipes.
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    # OpenAI's penalties have no exact transformers counterpart; 0 (their default) is
    # accepted so that clients which always send them work, anything else is refused.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None  # OpenAI's end-user id for abuse tracking: accepted, unused

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is served (one reply per request)")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _zero_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("is not supported; use repetition_penalty (e.g. 1.1) instead")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("up to 4 non-empty stop strings")
        return stops

    def sampling(self) -> dict[str, Any]:
        out = {
            "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "max_new_tokens": self.max_completion_tokens or self.max_tokens,
        }
        return {k: v for k, v in out.items() if v is not None}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def parse_request(raw: bytes) -> ChatRequest:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object with a `messages` list")
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown field"
        elif first["type"] == "missing":
            msg = "is required"
        raise BadRequest(f"{where}: {msg}", param=where) from None


class ChatServer:
    """The state behind the routes: the session, its single generation worker and limits."""

    def __init__(self, session, model_id: str, context_length: int | None = None, system: str | None = None):
        self.session = session
        self.model_id = model_id
        self.system = system
        config = getattr(session.model, "config", None)
        self.context_length = context_length or getattr(config, "max_position_embeddings", None)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tifa-generate")
        self.created = int(time.time())

    def conversation(self, request: ChatRequest) -> list[dict[str, str]]:
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        if not any(m["role"] == "user" for m in messages):
            raise BadRequest("messages: at least one user message is needed", param="messages")
        if self.system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system})
        return messages

    def check_length(self, messages: list[dict[str, str]], sampling: dict[str, Any]) -> int:
        try:
            prompt_tokens = int(self.session.prompt_ids(messages)["input_ids"].shape[1])
        except Exception as exc:  # the chat template refused the conversation (raise_exception)
            raise BadRequest(f"messages: the chat template cannot render them: {exc}", param="messages") from None
        max_new = sampling.get("max_new_tokens") or self.session.sampling.get("max_new_tokens") or 0
        if self.context_length and prompt_tokens + max_new > self.context_length:
            raise BadRequest(
                f"messages: the prompt is {prompt_tokens} tokens and max_tokens {max_new}; together they exceed "
                f"the model's context of {self.context_length} tokens. Shorten the history or lower max_tokens.",
                param="messages",
            )
        return prompt_tokens

    def completion(self, request_id: str, reply) -> dict[str, Any]:
        return {
            "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": self.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": reply.finish_reason}],
            "usage": _usage(reply.prompt_tokens, reply.completion_tokens),
        }

    def chunk(self, request_id: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self.model_id, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def build_app(server: ChatServer):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="tifa-lite", docs_url=None, redoc_url=None)

    @app.exception_handler(HTTPException)
    async def _http_error(_request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        return JSONResponse(error_body(str(exc.errors()[0].get("msg"))), status_code=400)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": server.model_id, "object": "model", "created": server.created, "owned_by": "tifa-lite"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        try:
            parsed = parse_request(await request.body())
            messages = server.conversation(parsed)
            sampling = parsed.sampling()
            # Tokenising is milliseconds: done here, so a bad request is refused at once even
            # while the worker is busy with a queue of generations.
            server.check_length(messages, sampling)
        except BadRequest as exc:
            return JSONResponse(error_body(exc.message, exc.kind, exc.param), status_code=exc.status)
        if parsed.seed is not None:
            sampling["seed"] = parsed.seed
        if parsed.stream:
            include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
            return StreamingResponse(_stream(server, request_id, messages, parsed.stop, sampling, include_usage),
                                     media_type="text/event-stream")
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(
                server.worker, lambda: server.session.reply(messages, stop=parsed.stop, **sampling))
        except Exception as exc:  # one failed generation answers its own request only
            log.exception("generation failed")
            return JSONResponse(error_body(f"generation failed: {exc}", "server_error"), status_code=500)
        return server.completion(request_id, reply)

    return app


async def _stream(server: ChatServer, request_id: str, messages, stop, sampling, include_usage: bool):
    from transformers import AsyncTextIteratorStreamer

    streamer = AsyncTextIteratorStreamer(server.session.tokenizer, skip_prompt=True, skip_special_tokens=True)
    loop = asyncio.get_running_loop()

    def generate():
        try:
            return server.session.reply(messages, streamer=streamer, stop=stop, **sampling)
        except Exception:
            streamer.end()  # wake the reader; the error is reported from the future below
            raise

    future = loop.run_in_executor(server.worker, generate)
    yield server.chunk(request_id, {"role": "assistant", "content": ""})
    sent = ""
    async for piece in streamer:
        # A stop string is cut from the final reply; hold back text that may be its start.
        sent_candidate = sent + piece
        safe = _safe_prefix(sent_candidate, stop)
        if len(safe) > len(sent):
            yield server.chunk(request_id, {"content": safe[len(sent):]})
            sent = safe
    try:
        reply = await future
    except Exception as exc:
        log.exception("generation failed")
        yield f"data: {json.dumps(error_body(f'generation failed: {exc}', 'server_error'))}\n\n"
        yield "data: [DONE]\n\n"
        return
    # The reply is the stripped, stop-cut text; send whatever of it the deltas have not.
    text = reply.text
    if text.startswith(sent.strip()) and len(text) > len(sent.strip()):
        yield server.chunk(request_id, {"content": text[len(sent.strip()):]})
    yield server.chunk(request_id, {}, reply.finish_reason)
    if include_usage:
        body = {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": server.model_id, "choices": [], "usage": _usage(reply.prompt_tokens, reply.completion_tokens)}
        yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"


def _safe_prefix(text: str, stop: list[str] | None) -> str:
    """The part of ``text`` that can be sent: before any stop string, and not ending in the
    beginning of one."""
    if not stop:
        return text
    for s in stop:
        if s in text:
            text = text[: text.index(s)]
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                return text[:-k]
    return text


def serve(server: ChatServer, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this address can use the model", host)
    uvicorn.run(build_app(server), host=host, port=port, log_level="info")

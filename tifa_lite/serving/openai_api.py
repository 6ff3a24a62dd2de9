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

Requests are shaped by what role-play front ends send (SillyTavern's chat-completion source,
Open WebUI's OpenAI connection, the ``openai`` client), so the rule for a field is what it
would do to the reply:

* honoured: ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``repetition_penalty``,
  ``presence_penalty``/``frequency_penalty`` (OpenAI's additive definition),
  ``logit_bias``, ``seed``, ``stop``, ``max_tokens``/``max_completion_tokens`` (clamped to
  the server's ``--max-tokens-cap``), ``stream_options.include_usage``; ``developer`` turns
  are system turns; ``name`` is passed to a chat template that renders it, else written
  before the content as ``name: content``;
* accepted and ignored, logged once per field: what cannot change the reply here
  (``logprobs: false``, ``tools`` with ``tool_choice`` auto/none, ``response_format``
  ``text``, ``reasoning_effort``, ``user``, ``parallel_tool_calls`` and fields of other
  vendors);
* refused with a 400 naming the field: what would silently answer something else than
  asked (``n > 1``, ``logprobs: true``, ``tool_choice`` required or a named function,
  ``response_format`` ``json_object``/``json_schema``), and values out of range.

Errors have OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), never a 500
for a bad request. Generations run one at a time on a single worker thread (one model, one
set of weights), so concurrent requests queue instead of fighting over the cores; parsing and
tokenising run on their own thread, off the event loop. A client that disconnects sets its
request's cancel event: a running generation stops at the next token, a queued one never
starts. A failed generation answers that request with a 500 and the server goes on.
"""

# No `from __future__ import annotations`: FastAPI reads the route's `request: Request`
# annotation at runtime, and Request is imported inside build_app (fastapi is an extra).
import asyncio
import json
import logging
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tifa_lite.serving.requests import (
    BadRequest, ChatRequest, conversation_turns, error_body, parse_request, template_renders_names,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Longer replies than this are not role-play turns; a client asking for 100k tokens would
# hold the single worker for minutes.
DEFAULT_MAX_TOKENS_CAP = 2048
# A long role-play history is ~100 KB of JSON; 4 MiB leaves room and stops a runaway body.
DEFAULT_MAX_BODY_BYTES = 4 * 2**20


@dataclass
class Job:
    """One accepted request, ready for the worker; ``cancel`` is set when its client leaves."""

    messages: list[dict[str, str]]
    stop: list[str] | None
    kwargs: dict[str, Any]
    prompt_tokens: int
    cancel: threading.Event = field(default_factory=threading.Event)


class ChatServer:
    """The state behind the routes: the session, its single generation worker and limits."""

    def __init__(self, session, model_id: str, context_length: int | None = None, system: str | None = None,
                 max_tokens_cap: int | None = DEFAULT_MAX_TOKENS_CAP, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.session = session
        self.model_id = model_id
        self.system = system
        config = getattr(session.model, "config", None)
        self.context_length = context_length or getattr(config, "max_position_embeddings", None)
        self.max_tokens_cap = max_tokens_cap
        self.max_body_bytes = max_body_bytes
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tifa-generate")
        # Parsing and tokenising a long history is not free; off the event loop, one at a time.
        self.preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tifa-prepare")
        self.created = int(time.time())
        self.names_in_template = template_renders_names(getattr(session.tokenizer, "chat_template", None))
        self._logged: set[str] = set()
        self._lock = threading.Lock()
        # never_started: queued requests of clients that left; cancelled: stopped mid-way.
        self.counts = {"started": 0, "finished": 0, "cancelled": 0, "never_started": 0, "failed": 0}
        self.running = 0
        self.cancelled_tokens: deque[int] = deque(maxlen=1000)  # how far stopped generations got

    def log_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.info(message, *args)

    def conversation(self, request: ChatRequest) -> list[dict[str, str]]:
        return conversation_turns(request, self.names_in_template, self.system)

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

    def prepare(self, raw: bytes) -> tuple[ChatRequest, Job]:
        """Parse, check and tokenise one request body (on the preparer thread)."""
        request = parse_request(raw)
        for name in request.ignored_fields():
            self.log_once(f"ignored:{name}", "request field %r accepted and ignored: it cannot change the reply here", name)
        messages = self.conversation(request)
        sampling = request.sampling()
        asked = sampling.get("max_new_tokens") or self.session.sampling.get("max_new_tokens")
        if self.max_tokens_cap and asked and asked > self.max_tokens_cap:
            self.log_once("cap", "max_tokens above --max-tokens-cap %d are lowered to it", self.max_tokens_cap)
            sampling["max_new_tokens"] = self.max_tokens_cap
        if request.logit_bias:
            vocab = self.session.vocab_size()
            outside = [k for k in request.logit_bias if not 0 <= int(k) < vocab]
            if outside:
                raise BadRequest(f"logit_bias: token id {outside[0]} is outside the vocabulary (0..{vocab - 1})",
                                 param="logit_bias")
        prompt_tokens = self.check_length(messages, sampling)
        kwargs = dict(sampling, presence_penalty=request.presence_penalty or 0.0,
                      frequency_penalty=request.frequency_penalty or 0.0, logit_bias=request.logit_bias)
        if request.seed is not None:
            kwargs["seed"] = request.seed
        return request, Job(messages, request.stop, kwargs, prompt_tokens)

    def generate(self, job: Job, streamer: Any = None):
        """Run one job on the worker; None when its client left before its turn."""
        with self._lock:
            if job.cancel.is_set():
                self.counts["never_started"] += 1
                if streamer is not None:
                    streamer.end()
                return None
            self.counts["started"] += 1
            self.running += 1
        try:
            reply = self.session.reply(job.messages, streamer=streamer, stop=job.stop, cancel=job.cancel, **job.kwargs)
        except Exception:
            with self._lock:
                self.counts["failed"] += 1
            raise
        finally:
            with self._lock:
                self.running -= 1
        with self._lock:
            self.counts["cancelled" if reply.finish_reason == "cancelled" else "finished"] += 1
            if reply.finish_reason == "cancelled":
                self.cancelled_tokens.append(reply.completion_tokens)
        return reply

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"status": "ok", "running": self.running, **self.counts}

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


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with a 413 past ``limit`` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"the request body is {declared} bytes; this server takes up to {limit} "
                         "(serve --max-body-bytes)", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the request body is over {limit} bytes (serve --max-body-bytes)", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _cancel_on_disconnect(request, cancel: threading.Event) -> None:
    # The body is read: the next ASGI message on this request can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


def build_app(server: ChatServer):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response

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
        return server.health()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        loop = asyncio.get_running_loop()
        try:
            raw = await read_body(request, server.max_body_bytes)
            parsed, job = await loop.run_in_executor(server.preparer, server.prepare, raw)
        except ClientDisconnect:  # left while sending the body
            return Response(status_code=499)
        except BadRequest as exc:
            return JSONResponse(error_body(exc.message, exc.kind, exc.param), status_code=exc.status)
        if parsed.stream:
            include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
            return StreamingResponse(_stream(server, request_id, job, include_usage), media_type="text/event-stream")
        watcher = asyncio.ensure_future(_cancel_on_disconnect(request, job.cancel))
        try:
            reply = await loop.run_in_executor(server.worker, server.generate, job)
        except Exception as exc:  # one failed generation answers its own request only
            log.exception("generation failed")
            return JSONResponse(error_body(f"generation failed: {exc}", "server_error"), status_code=500)
        finally:
            watcher.cancel()
        if reply is None or reply.finish_reason == "cancelled":  # nobody is listening
            return JSONResponse(error_body("the client disconnected", "server_error"), status_code=499)
        return server.completion(request_id, reply)

    return app


async def _stream(server: ChatServer, request_id: str, job: Job, include_usage: bool):
    from transformers import AsyncTextIteratorStreamer

    streamer = AsyncTextIteratorStreamer(server.session.tokenizer, skip_prompt=True, skip_special_tokens=True)
    loop = asyncio.get_running_loop()

    def generate():
        try:
            return server.generate(job, streamer)
        except Exception:
            streamer.end()  # wake the reader; the error is reported from the future below
            raise

    future = loop.run_in_executor(server.worker, generate)
    stop = job.stop
    try:
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
                    "model": server.model_id, "choices": [],
                    "usage": _usage(reply.prompt_tokens, reply.completion_tokens)}
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        # Starlette cancels this generator when the client disconnects (or it ran to the end):
        # either way nobody reads further, so the generation stops or never starts.
        job.cancel.set()


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

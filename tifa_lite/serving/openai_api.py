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

Requests are shaped by what role-play front ends send (SillyTavern's chat- and text-completion
sources, Open WebUI's OpenAI connection, the ``openai`` client), so the rule for a field is what
it would do to the reply (the README's table lists them):

* honoured: ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``typical_p``,
  ``repetition_penalty``, ``presence_penalty``/``frequency_penalty`` (OpenAI's additive
  definition), ``logit_bias``, ``seed``, ``stop``, ``max_tokens``/``max_completion_tokens``
  (clamped to the server's ``--max-tokens-cap``), ``stream_options.include_usage``,
  ``logprobs``/``top_logprobs`` (:mod:`tifa_lite.serving.generation`), ``n`` up to ``--max-n``,
  Ollama's ``repeat_penalty``/``repeat_last_n``/``num_predict``; ``developer`` turns are system
  turns; ``name`` and SillyTavern's example turns as :func:`~tifa_lite.serving.requests.conversation_turns`
  says;
* accepted and ignored, logged once per field and listed in ``/v1/models``' metadata: what
  cannot change the reply here (``tools`` with ``tool_choice`` auto/none, ``response_format``
  ``text``, ``reasoning_effort``, ``user``, Ollama's llama.cpp-only options, other vendors' fields);
* refused with a 400 naming the field: what would silently answer something else than asked
  (``n`` above the cap, ``tool_choice`` required or a named function, ``response_format``
  ``json_object``/``json_schema``, ``echo``/``suffix`` on completions), and values out of range.

Errors have OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), never a 500
for a bad request. Generations are batched (:mod:`tifa_lite.serving.batcher`: requests that
arrive together share forward passes) or, for a model whose cache cannot be batched, run one at
a time on a single worker thread; parsing and tokenising run on their own thread, off the event
loop. A client that disconnects sets its request's cancel event: a running generation stops at
the next token, a queued one never starts. A failed generation answers its requests with a 500
and the server goes on. Whole and streamed replies come from the same tokens by the same rule
(:mod:`tifa_lite.conversation.reply_text`), so a stream is exactly the whole reply.
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tifa_lite.conversation.reply_text import decode
from tifa_lite.serving.generation import (
    Choice, LogitsTap, StopStrings, TokenSink, chat_logprobs, completion_logprobs,
)
from tifa_lite.serving.requests import (
    NO_EFFECT_FIELDS, OLLAMA_IGNORED, OLLAMA_MAPPED, BadRequest, ChatRequest, CompletionRequest, conversation_turns,
    error_body, parse_request, template_renders_names,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Longer replies than this are not role-play turns; a client asking for 100k tokens would
# hold the single worker for minutes.
DEFAULT_MAX_TOKENS_CAP = 2048
# A long role-play history is ~100 KB of JSON; 4 MiB leaves room and stops a runaway body.
DEFAULT_MAX_BODY_BYTES = 4 * 2**20
# n replies are one batched generate: memory and time grow with n; SillyTavern's swipes ask 2-4.
DEFAULT_MAX_N = 4
DEFAULT_MAX_BATCH = 8  # replies (a request with n asks for n) decoded together
DEFAULT_MAX_QUEUE = 64  # requests waiting or running; more get a 503


@dataclass
class Job:
    """One accepted request, ready for the worker; ``cancel`` is set when its client leaves."""

    inputs: dict[str, Any]  # the tokenised prompt
    stop: list[str] | None
    kwargs: dict[str, Any]
    prompt_tokens: int
    n: int = 1
    logprobs: int | None = None  # None: none; k: the chosen token's and the k likeliest
    strip: bool = True  # a chat reply is stripped; a text completion is sent as generated
    think_open: bool = False
    processors: tuple = ()
    cancel: threading.Event = field(default_factory=threading.Event)
    session: Any = None  # the character's session (template, sampling); the server's own when None
    adapter: str | None = None  # its PEFT adapter when several are served
    model_id: str | None = None


class ChatServer:
    """The state behind the routes: the session, its single generation worker and limits."""

    def __init__(self, session, model_id: str, context_length: int | None = None, system: str | None = None,
                 max_tokens_cap: int | None = DEFAULT_MAX_TOKENS_CAP, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 max_n: int = DEFAULT_MAX_N, max_batch: int = DEFAULT_MAX_BATCH, max_queue: int = DEFAULT_MAX_QUEUE,
                 batching: bool = True, personas: list | None = None):
        from tifa_lite.conversation.template_structure import end_of_turn_ids
        from tifa_lite.serving import batcher
        from tifa_lite.serving.adapters import BASE, Persona

        self.session = session
        self.model_id = model_id
        self.system = system
        config = getattr(session.model, "config", None)
        self.context_length = context_length or getattr(config, "max_position_embeddings", None)
        self.max_tokens_cap = max_tokens_cap
        self.max_body_bytes = max_body_bytes
        self.max_n = max_n
        self.eos_ids = set(end_of_turn_ids(session.tokenizer, session.model.generation_config.eos_token_id))
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
        self.max_queue = max_queue
        self.waiting = 0  # the one-at-a-time path's queue (the batcher keeps its own)
        # Several characters on one base: the base under its own id, then each adapter's.
        self.personas = {model_id: Persona(model_id, session, BASE if personas else None)}
        self.personas.update({p.model_id: p for p in personas or []})
        self.batcher = None
        if batching and batcher.supports(session.model):
            self.batcher = batcher.Batcher(session, self.eos_ids, max_batch, max_queue, on_done=self._count)
            self.batcher.mixed_adapters = bool(personas)
        elif batching:
            log.info("this model's KV cache cannot be batched (sliding-window or hybrid layers): "
                     "requests are generated one at a time")

    def log_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.info(message, *args)

    def conversation(self, request: ChatRequest, session=None) -> list[dict[str, str]]:
        names = self.names_in_template if session is None or session is self.session else \
            template_renders_names(getattr(session.tokenizer, "chat_template", None))
        return conversation_turns(request, names, self.system)

    def persona(self, model: str | None):
        """The character a request's ``model`` names; with one model served, any name is it."""
        if len(self.personas) == 1 or model is None:
            return self.personas[self.model_id] if model not in self.personas else self.personas[model]
        if model not in self.personas:
            raise BadRequest(f"model: {model!r} is not served here; choose one of {', '.join(self.personas)}",
                             param="model", status=404, kind="not_found_error")
        return self.personas[model]

    def check_length(self, prompt_tokens: int, sampling: dict[str, Any], param: str = "messages",
                     session=None) -> None:
        max_new = sampling.get("max_new_tokens") or (session or self.session).sampling.get("max_new_tokens") or 0
        if self.context_length and prompt_tokens + max_new > self.context_length:
            raise BadRequest(
                f"{param}: the prompt is {prompt_tokens} tokens and max_tokens {max_new}; together they exceed "
                f"the model's context of {self.context_length} tokens. Shorten the history or lower max_tokens.",
                param=param,
            )

    def prepare(self, raw: bytes) -> tuple[ChatRequest, Job]:
        """Parse, check and tokenise one chat request body (on the preparer thread)."""
        request = parse_request(raw, ChatRequest)
        persona = self.persona(request.model)
        messages = self.conversation(request, persona.session)
        try:
            inputs = persona.session.prompt_ids(messages)
        except Exception as exc:  # the chat template refused the conversation (raise_exception)
            raise BadRequest(f"messages: the chat template cannot render them: {exc}", param="messages") from None
        return request, self._job(request, inputs, "messages", persona,
                                  think_open=persona.session.opens_think(messages))

    def prepare_completion(self, raw: bytes) -> tuple[CompletionRequest, Job]:
        """The same for ``/v1/completions``: the prompt is tokenised as sent, no chat template."""
        request = parse_request(raw, CompletionRequest)
        persona = self.persona(request.model)
        inputs = persona.session.tokenizer(request.prompt, return_tensors="pt")
        return request, self._job(request, dict(inputs), "prompt", persona, strip=False)

    def _job(self, request, inputs: dict[str, Any], param: str, persona, strip: bool = True,
             think_open: bool = False) -> Job:
        session = persona.session
        from tifa_lite.conversation.logits import WindowedRepetitionPenalty

        for name in request.ignored_fields():
            self.log_once(f"ignored:{name}", "request field %r accepted and ignored: it cannot change the reply here", name)
        n = request.n or 1
        if n > self.max_n:
            raise BadRequest(f"n: up to {self.max_n} replies per request on this server (serve --max-n); got {n}",
                             param="n")
        sampling = request.sampling()
        asked = sampling.get("max_new_tokens") or session.sampling.get("max_new_tokens")
        if self.max_tokens_cap and asked and asked > self.max_tokens_cap:
            self.log_once("cap", "max_tokens above --max-tokens-cap %d are lowered to it", self.max_tokens_cap)
            sampling["max_new_tokens"] = self.max_tokens_cap
        if request.logit_bias:
            vocab = session.vocab_size()
            outside = [k for k in request.logit_bias if not 0 <= int(k) < vocab]
            if outside:
                raise BadRequest(f"logit_bias: token id {outside[0]} is outside the vocabulary (0..{vocab - 1})",
                                 param="logit_bias")
        processors: tuple = ()
        window = request.penalty_window()
        if window is not None:  # Ollama's repeat_last_n: the penalty looks at the last `window` tokens only
            penalty = sampling.get("repetition_penalty") or session.sampling.get("repetition_penalty") or 1.0
            sampling["repetition_penalty"] = 1.0
            if window > 0 and penalty != 1.0:
                processors = (WindowedRepetitionPenalty(penalty, window),)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        if (request.num_predict or 0) < 0 and "max_new_tokens" not in sampling:
            # Ollama's "no limit" (-1) and "fill the context" (-2): as far as the cap and the context allow
            room = [x for x in (self.max_tokens_cap, self.context_length and self.context_length - prompt_tokens) if x]
            if room:
                sampling["max_new_tokens"] = max(1, min(room))
        self.check_length(prompt_tokens, sampling, param, session)
        kwargs = dict(sampling, presence_penalty=request.presence_penalty or 0.0,
                      frequency_penalty=request.frequency_penalty or 0.0, logit_bias=request.logit_bias)
        if request.seed is not None:
            kwargs["seed"] = request.seed
        return Job(inputs, request.stop, kwargs, prompt_tokens, n=n, logprobs=request.logprobs_k(), strip=strip,
                   think_open=think_open, processors=processors, session=session, adapter=persona.adapter,
                   model_id=persona.model_id)

    def sink(self, job: Job, on_step: Any = None) -> TokenSink:
        return TokenSink((job.session or self.session).tokenizer, job.n, self.eos_ids, job.stop, job.strip, job.think_open,
                         on_step=on_step)

    def submit(self, job: Job, sink: TokenSink | None = None) -> Future:
        """Queue one job: batched with the others when the model allows, else on the single
        worker; the future's result is None when its client left before its turn. Past
        ``max_queue`` waiting or running requests, a 503."""
        sink = sink or self.sink(job)
        if self.batcher is not None:
            return self.batcher.submit(job, sink)
        with self._lock:
            if self.waiting >= self.max_queue:
                raise BadRequest(f"the server has {self.waiting} requests waiting or running, its limit "
                                 "(serve --max-queue); try again shortly", status=503, kind="server_error")
            self.waiting += 1
        future = self.worker.submit(self.generate_alone, job, sink)
        future.add_done_callback(lambda _: self._left_queue())
        return future

    def _left_queue(self) -> None:
        with self._lock:
            self.waiting -= 1

    def generate(self, job: Job, sink: TokenSink | None = None) -> list[Choice] | None:
        """Run one job and wait for it (tests, the benchmark)."""
        return self.submit(job, sink).result()

    def _count(self, job: Job, started: bool, error: Exception | None, choices=None) -> None:
        with self._lock:
            if not started:
                self.counts["never_started"] += 1
            elif error is not None:
                self.counts["started"] += 1
                self.counts["failed"] += 1
            else:
                self.counts["started"] += 1
                cancelled = job.cancel.is_set()
                self.counts["cancelled" if cancelled else "finished"] += 1
                if cancelled and choices:
                    self.cancelled_tokens.append(sum(c.completion_tokens for c in choices))

    def generate_alone(self, job: Job, sink: TokenSink) -> list[Choice] | None:
        """One job with ``generate``, on the single worker (models the batcher cannot take)."""
        with self._lock:
            if job.cancel.is_set():
                self.counts["never_started"] += 1
                sink.end()
                return None
            self.counts["started"] += 1
            self.running += 1
        try:
            with self.session.generation_lock:
                tap = LogitsTap(self.session.model, job.logprobs) if job.logprobs is not None else None
                sink.tap = tap
                try:
                    stopping = (StopStrings(sink, job.prompt_tokens),) if job.stop else ()
                    session = job.session or self.session
                    with _adapter_on(session.model, job.adapter):
                        _, kwargs = session.generate_tokens(
                            job.inputs, sink, cancel=job.cancel, n=job.n, logits_processors=job.processors,
                            stopping=stopping, **job.kwargs)
                finally:
                    if tap is not None:
                        tap.close()
        except Exception:
            with self._lock:
                self.counts["failed"] += 1
            sink.end()  # wake a stream's reader; the error is reported from the future
            raise
        finally:
            with self._lock:
                self.running -= 1
        choices = sink.choices(kwargs.get("max_new_tokens"), job.cancel.is_set(), job.logprobs is not None)
        with self._lock:
            cancelled = choices[0].finish_reason == "cancelled"
            self.counts["cancelled" if cancelled else "finished"] += 1
            if cancelled:
                self.cancelled_tokens.append(sum(c.completion_tokens for c in choices))
        return choices

    def health(self) -> dict[str, Any]:
        running = len(self.batcher.live) if self.batcher is not None else self.running
        with self._lock:
            return {"status": "ok", "running": running, **self.counts}

    def models(self) -> dict[str, Any]:
        meta = {"max_n": self.max_n, "max_tokens_cap": self.max_tokens_cap,
                "ignored_parameters": sorted(NO_EFFECT_FIELDS + OLLAMA_IGNORED),
                "mapped_parameters": dict(OLLAMA_MAPPED)}
        return {"object": "list", "data": [
            {"id": p.model_id, "object": "model", "created": self.created, "owned_by": "tifa-lite",
             "meta": {**meta, "adapter": p.adapter not in (None, "__base__"), "sampling": p.session.sampling,
                      "think_policy": "strip" if p.session.strip_think else "keep"}}
            for p in self.personas.values()]}

    def completion(self, request_id: str, job: Job, choices: list[Choice]) -> dict[str, Any]:
        tokenizer = (job.session or self.session).tokenizer
        return {
            "id": request_id, "object": "chat.completion", "created": int(time.time()),
            "model": job.model_id or self.model_id,
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                         "logprobs": chat_logprobs(tokenizer, c.logprobs) if c.logprobs is not None else None,
                         "finish_reason": c.finish_reason} for i, c in enumerate(choices)],
            "usage": _usage(job.prompt_tokens, sum(c.completion_tokens for c in choices)),
        }

    def text_completion(self, request_id: str, job: Job, choices: list[Choice]) -> dict[str, Any]:
        tokenizer = (job.session or self.session).tokenizer
        return {
            "id": request_id, "object": "text_completion", "created": int(time.time()),
            "model": job.model_id or self.model_id,
            "choices": [{"index": i, "text": c.text,
                         "logprobs": completion_logprobs(tokenizer, c.logprobs) if c.logprobs is not None else None,
                         "finish_reason": c.finish_reason} for i, c in enumerate(choices)],
            "usage": _usage(job.prompt_tokens, sum(c.completion_tokens for c in choices)),
        }

    def chunk(self, request_id: str, delta: dict[str, Any], finish: str | None = None, index: int = 0,
              logprobs: Any = None, model: str | None = None, **extra: Any) -> str:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        body = {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model or self.model_id, "choices": [choice], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def text_chunk(self, request_id: str, text: str, finish: str | None = None, index: int = 0,
                   logprobs: Any = None, model: str | None = None) -> str:
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        body = {"id": request_id, "object": "text_completion", "created": int(time.time()),
                "model": model or self.model_id, "choices": [choice]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _adapter_on(model, adapter: str | None):
    """The one adapter a one-at-a-time generation runs with (the base: all of them off)."""
    import contextlib

    from tifa_lite.serving.adapters import BASE

    if adapter is None:
        return contextlib.nullcontext()
    if adapter == BASE:
        return model.disable_adapter()
    model.set_adapter(adapter)
    return contextlib.nullcontext()


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


def build_app(server: ChatServer, cors_origins: list[str] | None = None):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response

    app = FastAPI(title="tifa-lite", docs_url=None, redoc_url=None)
    if cors_origins:
        add_cors(app, cors_origins)

    @app.exception_handler(HTTPException)
    async def _http_error(_request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        return JSONResponse(error_body(str(exc.errors()[0].get("msg"))), status_code=400)

    @app.get("/v1/models")
    async def models():
        return server.models()

    @app.get("/health")
    async def health():
        return server.health()

    async def answer(request: Request, prepare, prefix: str, chat: bool):
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        loop = asyncio.get_running_loop()
        try:
            raw = await read_body(request, server.max_body_bytes)
            parsed, job = await loop.run_in_executor(server.preparer, prepare, raw)
        except ClientDisconnect:  # left while sending the body
            return Response(status_code=499)
        except BadRequest as exc:
            return JSONResponse(error_body(exc.message, exc.kind, exc.param), status_code=exc.status)
        if parsed.stream:
            include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
            wake = asyncio.Event()
            sink = server.sink(job, on_step=lambda: loop.call_soon_threadsafe(wake.set))
            try:
                future = server.submit(job, sink)
            except BadRequest as exc:  # the queue is full
                return JSONResponse(error_body(exc.message, exc.kind, exc.param), status_code=exc.status)
            return StreamingResponse(_stream(server, request_id, job, sink, wake, future, include_usage, chat),
                                     media_type="text/event-stream")
        watcher = asyncio.ensure_future(_cancel_on_disconnect(request, job.cancel))
        try:
            choices = await asyncio.wrap_future(server.submit(job))
        except BadRequest as exc:  # the queue is full
            return JSONResponse(error_body(exc.message, exc.kind, exc.param), status_code=exc.status)
        except Exception as exc:  # one failed generation answers its own request only
            log.exception("generation failed")
            return JSONResponse(error_body(f"generation failed: {exc}", "server_error"), status_code=500)
        finally:
            watcher.cancel()
        if choices is None or choices[0].finish_reason == "cancelled":  # nobody is listening
            return JSONResponse(error_body("the client disconnected", "server_error"), status_code=499)
        return (server.completion if chat else server.text_completion)(request_id, job, choices)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answer(request, server.prepare, "chatcmpl", chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, server.prepare_completion, "cmpl", chat=False)

    return app


def add_cors(app, origins: list[str]) -> None:
    """Browsers calling the server from another origin (Open WebUI's Direct Connections):
    Starlette's CORS middleware answers the preflight ``OPTIONS`` for these origins only."""
    from starlette.middleware.cors import CORSMiddleware

    app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["*"], max_age=600)


async def _stream(server: ChatServer, request_id: str, job: Job, sink: TokenSink, wake: asyncio.Event,
                  future: Future, include_usage: bool, chat: bool = True):
    future = asyncio.wrap_future(future)
    tokenizer = sink.tokenizer
    model = job.model_id or server.model_id
    streams = sink.streams()
    logprobs_sent = [0] * job.n

    def shaped(entries):
        if job.logprobs is None or not entries:
            return None
        return chat_logprobs(tokenizer, entries) if chat else completion_logprobs(tokenizer, entries)

    def piece(i: int, text: str, entries, finish: str | None = None) -> str:
        if chat:
            return server.chunk(request_id, {"content": text} if text or finish is None else {}, finish, index=i,
                                logprobs=shaped(entries), model=model)
        return server.text_chunk(request_id, text, finish, index=i, logprobs=shaped(entries), model=model)

    try:
        if chat:
            for i in range(job.n):
                yield server.chunk(request_id, {"role": "assistant", "content": ""}, index=i, model=model)
        ended = False
        while not ended:
            await wake.wait()
            wake.clear()
            ended = sink.ended
            with sink.lock:
                rows = [(list(r.tokens), list(r.logprobs)) for r in sink.rows]
            for i, (tokens, entries) in enumerate(rows):
                # Only text no later token can change is sent (reply_text.StreamText).
                delta = streams[i].feed(decode(tokenizer, tokens))
                if delta:
                    yield piece(i, delta, entries[logprobs_sent[i]:])
                    logprobs_sent[i] = len(entries)
        try:
            choices = await future
        except Exception as exc:
            log.exception("generation failed")
            yield f"data: {json.dumps(error_body(f'generation failed: {exc}', 'server_error'))}\n\n"
            yield "data: [DONE]\n\n"
            return
        if choices is None:
            return
        for i, choice in enumerate(choices):
            rest = streams[i].finish(choice.text)
            entries = (choice.logprobs or [])[logprobs_sent[i]:]
            if rest or entries:
                yield piece(i, rest, entries)
            yield piece(i, "", [], choice.finish_reason)
        if include_usage:
            body = {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": int(time.time()), "model": model, "choices": [],
                    "usage": _usage(job.prompt_tokens, sum(c.completion_tokens for c in choices))}
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        # Starlette cancels this generator when the client disconnects (or it ran to the end):
        # either way nobody reads further, so the generation stops or never starts.
        job.cancel.set()


def serve(server: ChatServer, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          cors_origins: list[str] | None = None) -> None:
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this address can use the model", host)
    uvicorn.run(build_app(server, cors_origins), host=host, port=port, log_level="info")

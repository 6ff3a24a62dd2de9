"""The OpenAI chat-completions request as this project reads it: the schema (what is
honoured, accepted-and-ignored or refused, field by field — the rules are in
:mod:`tifa_lite.serving.openai_api`'s docstring), its parsing into a :class:`BadRequest` that
names the field, and the request's turns as the chat template takes them. Shared by our own
server and the middleware in front of another engine's (:mod:`tifa_lite.serving.engines`)."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

MAX_STOP_STRINGS = 16  # OpenAI allows 4; llama.cpp any number; SillyTavern may send a dozen

# Fields that cannot change the reply here: accepted, logged once (what each one means is in
# the module docstring). Anything else unknown is logged the same way.
NO_EFFECT_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "response_format",
                    "reasoning_effort", "user", "store", "metadata", "service_tier", "modalities")
# Ollama's options (Open WebUI's advanced parameters) with no counterpart here: they tune
# llama.cpp's own sampler or memory (mirostat, tail-free sampling, context, threads) or
# Ollama itself. Listed in /v1/models' metadata and the README, and logged once when sent.
OLLAMA_IGNORED = ("mirostat", "mirostat_eta", "mirostat_tau", "tfs_z", "num_ctx", "num_batch", "num_keep",
                  "num_thread", "num_gpu", "use_mmap", "use_mlock", "penalize_newline", "keep_alive", "format")
# Ollama's names for what is honoured here, and what each one becomes.
OLLAMA_MAPPED = {"repeat_penalty": "repetition_penalty", "repeat_last_n": "the window repetition_penalty looks at "
                 "(0: off, -1: prompt and reply)", "num_predict": "max_tokens (-1, -2: the server's cap)",
                 "typical_p": "typical_p (locally typical sampling)"}
# SillyTavern sends its example dialogue as system turns with these names.
EXAMPLE_NAMES = {"example_user": "user", "example_assistant": "assistant"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    # "developer" is OpenAI's current name for the system turn.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")  # include_obfuscation and later additions change nothing here
    include_usage: bool = False


class _GenerationRequest(BaseModel):
    """The fields chat and text completions share."""

    model_config = ConfigDict(extra="allow")  # other vendors' fields: ignored, logged once

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    # Not in OpenAI's schema, but sent by role-play clients and in our recipes; 0 is "off".
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    typical_p: float | None = Field(None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    # Ollama's names (Open WebUI's advanced parameters): repeat_penalty is repetition_penalty
    # over the last repeat_last_n tokens (0: off, -1: the whole context), num_predict is
    # max_tokens (-1/-2, "no limit"/"fill the context": the server's cap).
    repeat_penalty: float | None = Field(None, gt=0.0)
    repeat_last_n: int | None = Field(None, ge=-1)
    num_predict: int | None = Field(None, ge=-2)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else value
        stops = [s for s in stops or [] if s]  # front ends send "" or [] for "none"
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"up to {MAX_STOP_STRINGS} stop strings")
        return stops or None

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None):
        for key, bias in (value or {}).items():
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys are token ids as strings; got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"token {key}: bias {bias} is outside -100..100")
        return value or None

    def ignored_fields(self) -> list[str]:
        """The fields sent that change nothing here (for the log)."""
        sent = self.model_fields_set | set(self.model_extra or {})
        return sorted(k for k in sent if k in NO_EFFECT_FIELDS or k in (self.model_extra or {}))

    def asked_max_tokens(self) -> int | None:
        return self.max_tokens or (self.num_predict if self.num_predict and self.num_predict > 0 else None)

    def penalty_window(self) -> int | None:
        """How many recent tokens ``repetition_penalty`` looks at (None: prompt and reply, as
        transformers does; 0: no penalty)."""
        return None if self.repeat_last_n in (None, -1) else self.repeat_last_n

    def sampling(self) -> dict[str, Any]:
        out = {
            "temperature": self.temperature, "top_p": self.top_p,
            "top_k": self.top_k or None, "min_p": self.min_p or None,  # 0 means "off" in every front end
            "typical_p": self.typical_p if self.typical_p and self.typical_p < 1 else None,
            "repetition_penalty": self.repetition_penalty or self.repeat_penalty,
            "max_new_tokens": self.asked_max_tokens(),
        }
        if self.temperature is not None:  # a client's temperature wins over a greedy server default
            out["do_sample"] = self.temperature > 0
        return {k: v for k, v in out.items() if v is not None}


class ChatRequest(_GenerationRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("tool_choice")
    @classmethod
    def _no_forced_tools(cls, value, info: ValidationInfo):
        forced = value == "required" or isinstance(value, dict)
        if forced and info.data.get("tools"):
            raise ValueError("this server does not call tools; a required tool call cannot be honoured "
                             "(send tool_choice: \"auto\" or no tools)")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value):
        if value is not None and value.get("type", "text") != "text":
            raise ValueError(f"type {value.get('type')!r} is not served (no constrained decoding here); "
                             "only {\"type\": \"text\"}")
        return value

    def asked_max_tokens(self) -> int | None:
        return self.max_completion_tokens or super().asked_max_tokens()

    def logprobs_k(self) -> int | None:
        """None: no log-probabilities; k: the chosen token's and the k likeliest."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_GenerationRequest):
    """``/v1/completions``: the prompt is the client's own instruct template, sent as is."""

    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("one prompt per request (a list of one string, or a string)")
            value = value[0]
        if not value:
            raise ValueError("is empty")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool):
        if value:
            raise ValueError("echo is not served; the client has its prompt already")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value):
        if value:
            raise ValueError("insertion (suffix) is not served by a causal model here")
        return value

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value, info: ValidationInfo):
        if value is not None and value != (info.data.get("n") or 1):
            raise ValueError("best_of other than n is not served (no ranking of replies here)")
        return value

    def logprobs_k(self) -> int | None:
        return self.logprobs


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def parse_request(raw: bytes, schema: type[_GenerationRequest] | None = None) -> Any:
    schema = schema or ChatRequest
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        what = "a `messages` list" if schema is ChatRequest else "a `prompt`"
        raise BadRequest(f"the request body must be a JSON object with {what}")
    try:  # JSON may spell a lone UTF-16 surrogate ("\ud800"), which no tokenizer can encode
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("a string in the request holds a lone UTF-16 surrogate (such as \\ud800), which is "
                         "not text; send valid Unicode") from None
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown field"
        elif first["type"] == "missing":
            msg = "is required"
        raise BadRequest(f"{where}: {msg}", param=where) from None


_NAME_IN_TEMPLATE = re.compile(r"""message\s*(\[\s*['"]name['"]\s*\]|\.name\b)""")


def template_renders_names(template: str | None) -> bool:
    """Whether a chat template reads a message's ``name`` (most ChatML ones do not)."""
    return bool(template and _NAME_IN_TEMPLATE.search(template))


def card_names(request: ChatRequest) -> dict[str, str | None]:
    """Who speaks for each role in example dialogue: the request's ``user_name``/``char_name``
    (SillyTavern's names for the persona and the card), else the ``name`` the conversation's
    own user/assistant turns carry, else nobody."""
    extra = request.model_extra or {}
    names: dict[str, str | None] = {"user": extra.get("user_name"), "assistant": extra.get("char_name")}
    for m in request.messages:
        if m.name and m.role in names and not names[m.role] and m.name not in EXAMPLE_NAMES:
            names[m.role] = m.name
    return {role: name if isinstance(name, str) and name else None for role, name in names.items()}


def conversation_turns(request: ChatRequest, names_in_template: bool, system: str | None) -> list[dict[str, str]]:
    """The request's turns as the chat template takes them: ``developer`` is ``system``;
    SillyTavern's ``example_user``/``example_assistant`` system turns are user/assistant turns
    spoken by the card's names (:func:`card_names`), never labelled "example_user"; any other
    ``name`` is the speaker's, passed to a template that renders it and otherwise written before
    the content as ``name: content``; and ``system`` (the server's character card) comes first
    when the request brings no system turn of its own."""
    if not any(m.role == "user" for m in request.messages):
        raise BadRequest("messages: at least one user message is needed", param="messages")
    speakers = card_names(request)
    messages = []
    for m in request.messages:
        role, name = ("system" if m.role == "developer" else m.role), m.name
        if m.role == "system" and name in EXAMPLE_NAMES:
            role = EXAMPLE_NAMES[name]
            name = speakers[role]
        turn = {"role": role, "content": m.text()}
        if name:
            if names_in_template:
                turn["name"] = name
            else:  # group chats need to know who speaks
                turn["content"] = f"{name}: {turn['content']}"
        messages.append(turn)
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages

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
NO_EFFECT_FIELDS = ("logprobs", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls", "response_format",
                    "reasoning_effort", "user", "store", "metadata", "service_tier", "modalities")


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


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # other vendors' fields: ignored, logged once

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    # Not in OpenAI's schema, but sent by role-play clients and in our recipes; 0 is "off".
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is served (one reply per request)")
        return value

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

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None):
        if value:
            raise ValueError("log-probabilities are not returned by this server; send logprobs: false")
        return value

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

    def ignored_fields(self) -> list[str]:
        """The fields sent that change nothing here (for the log)."""
        sent = self.model_fields_set | set(self.model_extra or {})
        return sorted(k for k in sent if k in NO_EFFECT_FIELDS or k in (self.model_extra or {}))

    def sampling(self) -> dict[str, Any]:
        out = {
            "temperature": self.temperature, "top_p": self.top_p,
            "top_k": self.top_k or None, "min_p": self.min_p or None,  # 0 means "off" in every front end
            "repetition_penalty": self.repetition_penalty,
            "max_new_tokens": self.max_completion_tokens or self.max_tokens,
        }
        if self.temperature is not None:  # a client's temperature wins over a greedy server default
            out["do_sample"] = self.temperature > 0
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
    try:  # JSON may spell a lone UTF-16 surrogate ("\ud800"), which no tokenizer can encode
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("a string in the request holds a lone UTF-16 surrogate (such as \\ud800), which is "
                         "not text; send valid Unicode") from None
    try:
        return ChatRequest.model_validate(body)
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


def conversation_turns(request: ChatRequest, names_in_template: bool, system: str | None) -> list[dict[str, str]]:
    """The request's turns as the chat template takes them: ``developer`` is ``system``, a
    ``name`` the template would drop is written before the content, and ``system`` (the
    server's character card) comes first when the request brings no system turn of its own."""
    messages = []
    for m in request.messages:
        turn = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.name:
            if names_in_template:
                turn["name"] = m.name
            else:  # group chats need to know who speaks
                turn["content"] = f"{m.name}: {turn['content']}"
        messages.append(turn)
    if not any(m["role"] == "user" for m in messages):
        raise BadRequest("messages: at least one user message is needed", param="messages")
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages

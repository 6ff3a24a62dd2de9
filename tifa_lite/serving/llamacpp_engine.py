"""``tifa-lite serve --engine llama.cpp``: the exported GGUF served by llama-cpp-python's own
OpenAI-compatible server (its ``[server]`` extra), for machines where a quantised GGUF in
llama.cpp is faster or lighter than transformers.

Read in llama-cpp-python 0.3 (``llama_cpp/server/{app,settings,model}.py``): ``create_app``
takes ``ServerSettings`` and ``ModelSettings``; a chat handler registered by name is used
when ``chat_format`` names it, so the chat template is ours (the one training rendered with,
``--chat-template`` included) rather than whatever the GGUF carries. Its server has no
server-side sampling defaults (every request field has llama.cpp's own default), so the
requests go through :class:`~tifa_lite.serving.engines.NormalisedRequests` first: the same
400s as our server, the recipe's sampling filled in, ``developer``/``name`` handled and
``<think>`` blocks stripped from the history. It stops a stream when the client disconnects
(it checks after each chunk); ``interrupt_requests`` is off, so one client's request does
not cut another's stream. It has no ``stream_options``: a stream ends without a usage chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError
from tifa_lite.serving.engines import EngineSpec, NormalisedRequests

SERVER_HINT = ("the llama.cpp engine needs llama-cpp-python and its server extra: run "
               "`bash scripts/install_llama_cpp.sh`, then `pip install sse-starlette starlette-context pydantic-settings`.")


def gguf_for(model: str | None, gguf: str | None) -> Path:
    """The GGUF to serve: ``--gguf``, or the embedded model's own file."""
    if gguf:
        path = Path(gguf).expanduser()
        if not path.is_file():
            raise ConfigError(f"--gguf {path}: no such file.")
        return path
    from tifa_lite.modeling.embedded import gguf_path, is_embedded

    if model and is_embedded(model):
        return gguf_path(model)
    raise ConfigError("--engine llama.cpp serves a GGUF: export one with `tifa-lite export gguf --model DIR "
                      "--output model.gguf`, then pass --gguf model.gguf (an adapter must be merged first).")


def chat_format_name(spec: EngineSpec) -> str:
    return f"tifa-lite:{spec.model_id}"


def settings(spec: EngineSpec, gguf: Path, host: str, port: int, n_ctx: int = 4096,
             n_threads: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ServerSettings, ModelSettings) fields, as plain dicts."""
    server = {"host": host, "port": port, "interrupt_requests": False}
    model = {"model": str(gguf), "model_alias": spec.model_id, "n_ctx": n_ctx, "chat_format": chat_format_name(spec),
             "verbose": False}
    if n_threads:
        model.update(n_threads=n_threads, n_threads_batch=n_threads)
    return server, model


def register_template(spec: EngineSpec) -> None:
    """Our chat template as a named llama.cpp chat handler (stops at every end-of-turn id)."""
    from llama_cpp import llama_chat_format

    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=spec.chat_template, eos_token=spec.eos_token, bos_token=spec.bos_token,
        stop_token_ids=spec.stop_token_ids)
    # overwrite: a second app in the same process (tests, a restart) registers the name again
    llama_chat_format.LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        chat_format_name(spec), formatter.to_chat_handler(), overwrite=True)


def build_app(spec: EngineSpec, gguf: Path, host: str = "127.0.0.1", port: int = 8000, n_ctx: int = 4096,
              n_threads: int | None = None):
    try:
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as exc:
        raise ConfigError(f"{SERVER_HINT} ({exc})") from None
    register_template(spec)
    server, model = settings(spec, gguf, host, port, n_ctx, n_threads)
    app = create_app(server_settings=ServerSettings(**server), model_settings=[ModelSettings(**model)])
    return NormalisedRequests(app, spec, penalty_key="repeat_penalty")


def serve(spec: EngineSpec, gguf: Path, host: str, port: int, n_ctx: int = 4096) -> None:
    import uvicorn

    uvicorn.run(build_app(spec, gguf, host, port, n_ctx), host=host, port=port, log_level="info")

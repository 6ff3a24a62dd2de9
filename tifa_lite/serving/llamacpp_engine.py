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

Many characters on one base (``--adapter NAME=PATH``): each adapter is converted once by
llama.cpp's ``convert_lora_to_gguf.py`` (:mod:`tifa_lite.export.llamacpp_lora`) and loaded
onto the base's one ``llama_model``. llama-cpp-python's ``LlamaProxy`` would load a whole
model per alias (a second character reloads the base), so :class:`CharacterProxy` takes its
place: a request's ``model`` selects the character's LoRA and chat format on the one context,
inside the server's lock (a stream holds it to its end, so no other request switches the
adapter mid-reply). Switching clears the reused prompt prefix: a KV cache computed with one
character's adapter is not another's.
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


class CharacterProxy:
    """In place of llama-cpp-python's ``LlamaProxy``: the base's one ``Llama``, with each
    character's LoRA (a GGUF from llama.cpp's converter) loaded onto its model once and
    selected per request by ``model``."""

    def __init__(self, proxy, base_alias: str, characters: dict[str, tuple[Path, str]]):
        import llama_cpp

        self._proxy = proxy
        self.llama = proxy()  # the base, loaded by create_app
        self.default = base_alias
        self._formats = {base_alias: self.llama.chat_format}
        self._adapters: dict[str, object | None] = {base_alias: None}
        for alias, (lora_file, chat_format) in characters.items():
            # freed with the model (llama.cpp frees a model's adapters when it frees the model)
            handle = llama_cpp.llama_adapter_lora_init(self.llama._model.model, str(lora_file).encode())
            if not handle:
                raise ConfigError(f"--adapter {alias}: llama.cpp could not load {lora_file} onto the base GGUF "
                                  "(an adapter of another base model, or one llama.cpp cannot apply).")
            self._adapters[alias], self._formats[alias] = handle, chat_format
        self.active = base_alias

    def __call__(self, model: str | None = None):
        import ctypes

        import llama_cpp

        alias = model if model in self._adapters else self.default
        if alias != self.active:
            handle = self._adapters[alias]
            if handle is None:
                rc = llama_cpp.llama_set_adapters_lora(self.llama._ctx.ctx, None, 0, None)
            else:
                rc = llama_cpp.llama_set_adapters_lora(
                    self.llama._ctx.ctx, (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle), 1,
                    (ctypes.c_float * 1)(1.0))
            if rc:
                raise RuntimeError(f"llama.cpp refused to switch to the adapter of {alias!r} (code {rc})")
            self.llama.reset()  # the cached prompt prefix was computed with the other adapter
            self.active = alias
        self.llama.chat_format = self._formats[alias]
        return self.llama

    def __iter__(self):
        return iter(self._adapters)

    def __getitem__(self, model: str):
        return self._proxy[self.default]

    def free(self):
        self._proxy.free()


def build_app(spec: EngineSpec, gguf: Path, host: str = "127.0.0.1", port: int = 8000, n_ctx: int = 4096,
              n_threads: int | None = None, characters: dict[str, tuple[EngineSpec, Path]] | None = None):
    """The llama-cpp-python app serving ``gguf`` as ``spec``; ``characters``: alias → (its
    spec, its LoRA GGUF), served on the same base."""
    try:
        from llama_cpp.server import app as server_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as exc:
        raise ConfigError(f"{SERVER_HINT} ({exc})") from None
    characters = characters or {}
    for each in (spec, *(character for character, _ in characters.values())):
        register_template(each)
    server, model = settings(spec, gguf, host, port, n_ctx, n_threads)
    app = server_app.create_app(server_settings=ServerSettings(**server), model_settings=[ModelSettings(**model)])
    if characters:
        # the routes read this module global at every request
        server_app._llama_proxy = CharacterProxy(
            server_app._llama_proxy, spec.model_id,
            {alias: (lora, chat_format_name(character)) for alias, (character, lora) in characters.items()})
    return NormalisedRequests(app, spec, penalty_key="repeat_penalty",
                              characters={alias: character for alias, (character, _) in characters.items()})


def serve(spec: EngineSpec, gguf: Path, host: str, port: int, n_ctx: int = 4096,
          characters: dict[str, tuple[EngineSpec, Path]] | None = None) -> None:
    import uvicorn

    uvicorn.run(build_app(spec, gguf, host, port, n_ctx, characters=characters), host=host, port=port,
                log_level="info")

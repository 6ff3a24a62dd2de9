"""`tifa-lite serve --model M [--adapter A] [--port 8000] [--engine transformers|llama.cpp|vllm]`:
an OpenAI-compatible API on 127.0.0.1."""

from __future__ import annotations


def register(sub) -> None:
    from tifa_lite.cli.chat import add_session_arguments
    from tifa_lite.serving.engines import ENGINES
    from tifa_lite.serving.openai_api import (
        DEFAULT_HOST, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_N, DEFAULT_MAX_QUEUE, DEFAULT_MAX_TOKENS_CAP,
        DEFAULT_PORT,
    )

    p = sub.add_parser("serve", help="serve a model or adapter as an OpenAI-compatible /v1/chat/completions (pip install 'tifa-lite[serve]')")
    add_session_arguments(p, many_adapters=True)
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--name", help="the model id clients see in /v1/models (default: the folder's name)")
    p.add_argument("--engine", choices=ENGINES, default="transformers",
                   help="transformers (default: one worker, any model or adapter), llama.cpp (a GGUF through "
                        "llama-cpp-python's server) or vllm (`vllm serve` on a CUDA GPU, many users at once)")
    p.add_argument("--max-tokens-cap", type=int, default=DEFAULT_MAX_TOKENS_CAP,
                   help=f"a request's max_tokens above this is lowered to it (default {DEFAULT_MAX_TOKENS_CAP}; 0: none)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help=f"larger request bodies get a 413 (default {DEFAULT_MAX_BODY_BYTES})")
    p.add_argument("--max-n", type=int, default=DEFAULT_MAX_N,
                   help=f"most replies one request may ask for with `n` (one batched generation; default {DEFAULT_MAX_N})")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"replies decoded together (continuous batching; default {DEFAULT_MAX_BATCH}; 1: one at a time)")
    p.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                   help=f"requests waiting or running; more get a 503 (default {DEFAULT_MAX_QUEUE})")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let a browser page from ORIGIN call the server (repeatable; '*' for any; default: none), "
                        "e.g. Open WebUI's Direct Connections")
    p.add_argument("--check-adapters", action="store_true",
                   help="with --adapter NAME=PATH: compare each adapter as served with the same adapter merged on "
                        "held-out prompts (greedy tokens, KL), print the table and exit (1 if any greedy reply differs)")
    p.add_argument("--check-prompts", help="--check-adapters: held-out prompts, a messages JSONL (default: built-in)")
    p.add_argument("--check-tokens", type=int, default=32, help="--check-adapters: greedy tokens per prompt")
    p.add_argument("--gguf", help="--engine llama.cpp: the GGUF to serve (from `tifa-lite export gguf`; "
                                  "default: the embedded model's own file)")
    p.add_argument("--n-ctx", type=int, default=4096, help="--engine llama.cpp: context length")
    p.set_defaults(handler=run)


def check_port(host: str, port: int) -> None:
    """Bind the address once before the model loads (minutes), so that a port in use is one
    line now and not uvicorn's raw Errno 98 afterwards."""
    import errno
    import socket

    from tifa_lite.errors import ConfigError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
            sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {port}: {host}:{port} is already in use (another server?). "
                              "Choose another --port, or stop the program that holds it.") from None
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}).") from None


def run(args) -> int:
    from pathlib import Path

    check_port(args.host, args.port)
    from tifa_lite.serving.adapters import parse_adapters

    args.adapter, adapters = parse_adapters(args.adapter)
    if adapters and not args.model:
        from tifa_lite.serving.engines import _base_name

        args.model = _base_name(None, next(iter(adapters.values())))
    name = args.name or Path(args.adapter or args.model).name
    cap = args.max_tokens_cap or None
    if args.engine != "transformers":
        return _run_engine(args, name, cap, adapters)
    from tifa_lite.cli.chat import session_from_args
    from tifa_lite.serving.openai_api import ChatServer, serve

    session = session_from_args(args)
    # The session's system prompt is the default for requests that bring none.
    system, session.system = session.system, None
    personas = None
    if adapters:
        from tifa_lite.serving.adapters import attach

        personas = attach(session, adapters, recipe=args.recipe, preset=args.preset, keep_think=args.keep_think or None,
                          temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                          repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens)
    if args.check_adapters:
        return _check_adapters(args, personas or [], adapters)
    server = ChatServer(session, name, system=system, max_tokens_cap=cap, max_body_bytes=args.max_body_bytes,
                        max_n=args.max_n, max_batch=args.max_batch, max_queue=args.max_queue, personas=personas)
    serve(server, host=args.host, port=args.port, cors_origins=args.cors_origin or None)
    return 0


def _check_adapters(args, personas: list, adapters: dict) -> int:
    from tifa_lite.errors import ConfigError
    from tifa_lite.serving.adapters import check_table, merged_copy, parity, read_prompts

    if not personas:
        raise ConfigError("--check-adapters compares named adapters: give --adapter NAME=PATH (one or more).")
    prompts = read_prompts(args.check_prompts)
    rows = [parity(p, merged_copy(args.model, adapters[p.model_id]), prompts, args.check_tokens) for p in personas]
    print(check_table(rows))
    return 0 if all(r["greedy_same"] == r["prompts"] for r in rows) else 1


def _run_engine(args, name: str, cap: int | None, adapters: dict | None = None) -> int:
    from tifa_lite.cli.chat import system_prompt
    from tifa_lite.serving.engines import engine_spec

    if args.engine == "vllm":
        from tifa_lite.serving import vllm_engine

        vllm_engine.check_can_run()  # before reading anything: a clear error on a machine without CUDA
    sampling = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                    repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens)
    spec = engine_spec(
        args.model, args.adapter, name, chat_template=args.chat_template, keep_think=args.keep_think,
        recipe=args.recipe, preset=args.preset, system=system_prompt(args), max_tokens_cap=cap,
        max_body_bytes=args.max_body_bytes, **sampling,
    )
    if args.engine == "vllm":
        return vllm_engine.serve(spec, args.host, args.port, bits=args.bits, adapters=adapters,
                                 cors_origins=args.cors_origin or None)
    from tifa_lite.errors import ConfigError
    from tifa_lite.serving import llamacpp_engine

    if args.adapter:
        raise ConfigError("--engine llama.cpp serves a GGUF, not an adapter: `tifa-lite merge` it, export the merged "
                          "model with `tifa-lite export gguf`, then pass --gguf; or name it, --adapter NAME=PATH, to "
                          "serve it as a LoRA on the base GGUF.")
    characters = {}
    if adapters:
        from tifa_lite.export.llamacpp_lora import cached_lora_gguf
        from tifa_lite.serving.engines import character_spec

        for alias, folder in adapters.items():
            character = character_spec(spec, alias, folder, recipe=args.recipe, preset=args.preset,
                                       keep_think=args.keep_think or None, **sampling)
            characters[alias] = (character, cached_lora_gguf(folder, base=spec.base))
    llamacpp_engine.serve(spec, llamacpp_engine.gguf_for(args.model, args.gguf), args.host, args.port, args.n_ctx,
                          characters=characters)
    return 0

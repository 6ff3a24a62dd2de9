"""`tifa-lite serve --model M [--adapter A] [--port 8000]`: an OpenAI-compatible API on 127.0.0.1."""

from __future__ import annotations


def register(sub) -> None:
    from tifa_lite.cli.chat import add_session_arguments
    from tifa_lite.serving.openai_api import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser("serve", help="serve a model or adapter as an OpenAI-compatible /v1/chat/completions (pip install 'tifa-lite[serve]')")
    add_session_arguments(p)
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--name", help="the model id clients see in /v1/models (default: the folder's name)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from tifa_lite.cli.chat import session_from_args
    from tifa_lite.serving.openai_api import ChatServer, serve

    session = session_from_args(args)
    # The session's system prompt is the default for requests that bring none.
    system, session.system = session.system, None
    name = args.name or Path(args.adapter or args.model).name
    serve(ChatServer(session, name, system=system), host=args.host, port=args.port)
    return 0

"""`tifa-lite chat --model DIR [--adapter DIR] [--once "prompt" | --web]`: a terminal chat loop,
one answer for scripts, or the web chat page."""

from __future__ import annotations

import sys


def add_session_arguments(p, many_adapters: bool = False) -> None:
    """What loads a model to talk to; shared by `chat` and `serve` (which takes many adapters)."""
    p.add_argument("--model", help="model folder, embedded name or hub id (default: the adapter's base)")
    if many_adapters:
        p.add_argument("--adapter", action="append", metavar="[NAME=]PATH",
                       help="LoRA adapter folder from a tifa_lite run; NAME=PATH (repeatable) serves each one as the "
                            "model id NAME on one copy of the base, which stays served under its own name")
    else:
        p.add_argument("--adapter", help="LoRA adapter folder from a tifa_lite run")
    p.add_argument("--system", help="system prompt text")
    p.add_argument("--system-file", help="read the system prompt from this file")
    p.add_argument("--recipe", help="take sampling defaults from this recipe's sampling: section")
    p.add_argument("--preset", help="sampling preset: tifa (temperature 0.4, top_p 0.6, repetition_penalty 1.17, 1536 tokens) or greedy")
    p.add_argument("--chat-template", help="named template (chatml, qwen, tifa, deepseek_r1, ziya) or .jinja path")
    p.add_argument("--keep-think", action="store_true", help="send earlier <think> blocks back to the model")
    p.add_argument("--bits", type=int, choices=[4, 8], help="load the base quantised (bitsandbytes)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--seed", type=int)


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model or adapter in the terminal, in a web page (--web) or --once for scripts")
    add_session_arguments(p)
    p.add_argument("--once", metavar="PROMPT", help="answer one prompt, print the reply, exit")
    p.add_argument("--web", action="store_true", help="open the web chat page (Gradio; pip install 'tifa-lite[web]')")
    p.add_argument("--host", default="127.0.0.1", help="--web: address to listen on")
    p.add_argument("--port", type=int, default=7860, help="--web: port")
    p.set_defaults(handler=run)


def system_prompt(args) -> str | None:
    """--system, or the text of --system-file."""
    from pathlib import Path

    from tifa_lite.errors import ConfigError

    if not getattr(args, "system_file", None):
        return args.system
    path = Path(args.system_file)
    if not path.is_file():
        raise ConfigError(f"--system-file {path}: no such file.")
    return path.read_text(encoding="utf-8").strip()


def session_from_args(args):
    from tifa_lite.conversation.session import chat

    return chat(
        args.model,
        args.adapter,
        system=system_prompt(args),
        recipe=args.recipe,
        preset=args.preset,
        chat_template=args.chat_template,
        think_policy="keep" if args.keep_think else "strip",
        bits=args.bits,
        seed=args.seed,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        max_new_tokens=args.max_new_tokens,
    )


def run(args) -> int:
    session = session_from_args(args)
    if args.web:
        from tifa_lite.serving.web import launch

        launch(session, host=args.host, port=args.port)
        return 0
    if args.once is not None:
        print(session.say(args.once))
        return 0
    print(f"sampling: {session.sampling}\n/reset clears the history, /exit or Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            session.reset()
            continue
        print("bot> ", end="", flush=True)
        session.say(text, stream=True)

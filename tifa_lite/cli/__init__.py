"""`tifa-lite` command line. Each subcommand lives in its own module with a
``register(subparsers)`` function; add the module's name to ``COMMANDS``."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from tifa_lite.errors import TifaError

COMMANDS = [
    "train",
    "config",
    "data",
    "chat",
    "serve",
    "eval",
    "pipeline",
    "export",
    "pairs",
    "launch",
    "merge",
    "plan",
]


def register_group(sub, name: str, help_text: str, subcommands: list[str]) -> None:
    """A nested command (`tifa-lite eval gsm8k`): each subcommand is the module
    ``tifa_lite.cli.<name>_<sub>`` with ``register(group_subparsers)``."""
    parser = sub.add_parser(name, help=help_text)
    group = parser.add_subparsers(dest=f"{name}_command", required=True)
    for subcommand in subcommands:
        importlib.import_module(f"tifa_lite.cli.{name}_{subcommand}").register(group)


def add_output_option(parser, help_text: str, required: bool = False) -> None:
    """``--output PATH``, the one spelling every command uses; ``--out`` is still accepted
    (hidden) for the commands that were first written with it."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--output", dest="output", help=help_text)
    group.add_argument("--out", dest="output", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    import tifa_lite

    parser = argparse.ArgumentParser(prog="tifa-lite", description=tifa_lite.__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the libraries' own progress bars and warnings (filtered by default)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"tifa_lite.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tifa_lite import interrupts

    # From the first moment: Ctrl-C or SIGTERM during the imports below is one line too.
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    resume = "tifa-lite " + shlex.join(argv)
    with interrupts.handling():
        try:
            with interrupts.describe(resume=resume):
                return _dispatch(argv)
        except interrupts.Interrupted as exc:
            print(f"tifa-lite: {exc}", file=sys.stderr)
            return exc.exit_code


def _dispatch(argv: list[str]) -> int:
    parser = build_parser()
    # Overrides may follow options too (`train R --profile P key=val`): argparse stops
    # filling the positional list at the first option, so collect the leftover key=value.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from tifa_lite.console import configure_cli_logging

    configure_cli_logging(args.verbose)
    from tifa_lite.interrupts import describe, raise_swallowed

    command = " ".join(filter(None, (args.command, getattr(args, f"{args.command}_command", None))))
    try:
        with describe(where=f"in `{command}`"):
            result = args.handler(args)
            raise_swallowed()
    except TifaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from tifa_lite import diskspace

        if not diskspace.is_disk_full(exc):
            raise
        # A command with no estimate of its own: where it wrote, or its output.
        where = getattr(exc, "filename", None) or getattr(args, "output", None) or "."
        print(f"error: {diskspace.message(where, None)}", file=sys.stderr)
        return 2
    return int(result or 0)

if __name__ == "__main__":
    sys.exit(main())

"""`tifa-lite eval <task>`: evaluations. Each task is a module ``tifa_lite.cli.eval_<name>``
with ``register(group_subparsers)``; list it in SUBCOMMANDS."""

from __future__ import annotations

import importlib

SUBCOMMANDS = [
    "roleplay",
    "preference",
    "gsm8k",
]


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model or adapter (roleplay, …)")
    group = p.add_subparsers(dest="eval_command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"tifa_lite.cli.eval_{name}").register(group)

"""`tifa-lite export <target>`: exports to other tools. Each target is a module
``tifa_lite.cli.export_<name>`` with ``register(group_subparsers)``; list it in SUBCOMMANDS."""

from __future__ import annotations

import importlib

SUBCOMMANDS = [
    "xtuner",
    "gguf",
]


def register(sub) -> None:
    p = sub.add_parser("export", help="export a recipe or a trained run to another tool (xtuner, …)")
    group = p.add_subparsers(dest="export_command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"tifa_lite.cli.export_{name}").register(group)

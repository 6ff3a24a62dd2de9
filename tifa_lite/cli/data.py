"""`tifa-lite data <tool>`: data preparation tools. Each tool is a module
``tifa_lite.cli.data_<name>`` with ``register(group_subparsers)``; list it in SUBCOMMANDS."""

from __future__ import annotations

import importlib

SUBCOMMANDS = [
    "roleplay",
]


def register(sub) -> None:
    p = sub.add_parser("data", help="prepare training data (roleplay, …)")
    group = p.add_subparsers(dest="data_command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"tifa_lite.cli.data_{name}").register(group)

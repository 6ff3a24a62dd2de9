"""`tifa-lite data <tool>`: data preparation tools. Each is a module ``tifa_lite.cli.data_<name>``
with ``register(group_subparsers)``; list it in SUBCOMMANDS."""

from __future__ import annotations

SUBCOMMANDS = [
    "roleplay",
]


def register(sub) -> None:
    from tifa_lite.cli import register_group

    register_group(sub, "data", "prepare training data (roleplay)", SUBCOMMANDS)

"""`tifa-lite eval <task>`: evaluations. Each is a module ``tifa_lite.cli.eval_<name>``
with ``register(group_subparsers)``; list it in SUBCOMMANDS."""

from __future__ import annotations

SUBCOMMANDS = [
    "roleplay",
    "preference",
    "gsm8k",
    "roleplay_judge",
]


def register(sub) -> None:
    from tifa_lite.cli import register_group

    register_group(sub, "eval", "evaluate a model or adapter (gsm8k, preference, roleplay, roleplay-judge)", SUBCOMMANDS)

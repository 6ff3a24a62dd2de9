"""`tifa-lite export <target>`: exports to other tools. Each is a module ``tifa_lite.cli.export_<name>``
with ``register(group_subparsers)``; list it in SUBCOMMANDS."""

from __future__ import annotations

SUBCOMMANDS = [
    "xtuner",
    "gguf",
    "ollama",
    "check",
]


def register(sub) -> None:
    from tifa_lite.cli import register_group

    register_group(sub, "export", "export a recipe or a trained model to another tool (gguf, ollama, xtuner) and check the chain (check)", SUBCOMMANDS)

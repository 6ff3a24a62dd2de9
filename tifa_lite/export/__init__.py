"""Exports of a recipe or a trained run to other tools (GGUF, xtuner)."""

"""Evaluation: one module per task (roleplay, gsm8k, preference); each has a CLI
under ``tifa-lite eval <task>``."""

"""Preference-pair builders (``tifa-lite pairs …``): reference-vs-self (Anima) and
anti-repetition (Tifa stage 4), plus the n-gram repetition rate they score with."""

from tifa_lite.pairs.builders import BuildReport, anti_repetition, mean_repetition, reference_vs_self, write_pairs
from tifa_lite.pairs.generate import GenerationSettings, generate
from tifa_lite.pairs.prompts import PromptItem, read_prompts
from tifa_lite.pairs.repetition import repetition_rate

__all__ = [
    "BuildReport", "GenerationSettings", "PromptItem", "anti_repetition", "generate", "mean_repetition",
    "read_prompts", "reference_vs_self", "repetition_rate", "write_pairs",
]

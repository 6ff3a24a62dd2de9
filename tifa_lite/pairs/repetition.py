"""N-gram repetition rate (rep-n, Welleck et al. 2019): ``1 - unique n-grams / n-grams``.

0 for text with no repeated n-gram, towards 1 for a loop. Words are the units for
alphabetic text; each CJK character is a unit of its own, since Chinese/Japanese text
has no spaces (Tifa's data is Chinese).
"""

from __future__ import annotations

import re

_UNITS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+|[^\w\s]", re.UNICODE)


def units(text: str) -> list[str]:
    return [u.lower() for u in _UNITS.findall(text)]


def repetition_rate(text: str, n: int = 3) -> float:
    tokens = units(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)

"""Role-play data kit: dialogue scripts (``Name:「…」``, ``Name: …``, CSV ``character,line``)
→ SFT conversations in the ``messages`` format. See :mod:`.parse` and :mod:`.build`."""

from __future__ import annotations

from pathlib import Path

from tifa_lite import atomic
from tifa_lite.roleplay.build import BuildReport, build_conversations, convert, find_system_prompt
from tifa_lite.roleplay.parse import Line, ParseReport, parse_corpus, parse_line


def write_jsonl(rows: list[dict], out: str | Path, keep_source: bool = False) -> Path:
    """Atomic write, so an interrupted conversion never leaves a half file for training to read."""
    return atomic.write_jsonl((row if keep_source else {"messages": row["messages"]} for row in rows), out)


__all__ = [
    "BuildReport", "Line", "ParseReport", "build_conversations", "convert", "find_system_prompt",
    "parse_corpus", "parse_line", "write_jsonl",
]

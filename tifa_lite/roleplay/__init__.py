"""Role-play data kit: dialogue scripts (``Name:「…」``, ``Name: …``, CSV ``character,line``)
→ SFT conversations in the ``messages`` format. See :mod:`.parse` and :mod:`.build`."""

from __future__ import annotations

import json
from pathlib import Path

from tifa_lite.roleplay.build import BuildReport, build_conversations, convert, find_system_prompt
from tifa_lite.roleplay.parse import Line, ParseReport, parse_corpus, parse_line


def write_jsonl(rows: list[dict], out: str | Path, keep_source: bool = False) -> Path:
    """Atomic write, so an interrupted conversion never leaves a half file for training to read."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            record = row if keep_source else {"messages": row["messages"]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out


__all__ = [
    "BuildReport", "Line", "ParseReport", "build_conversations", "convert", "find_system_prompt",
    "parse_corpus", "parse_line", "write_jsonl",
]

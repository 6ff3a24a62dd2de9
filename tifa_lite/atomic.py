"""Write-then-rename for every artifact a user later reads (merged models, GGUF files,
converted data, pair files): an interrupted or failed write leaves the old file or no
file, never a half-written one that training or llama.cpp would read without noticing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replacing_dir(target: str | Path, label: str = "partial") -> Iterator[Path]:
    """Yield an empty sibling folder of ``target``; it becomes ``target`` when the block
    ends normally (replacing what was there) and is removed when the block raises."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{label}-", dir=target.parent))
    try:
        yield staging
        swap_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_dir(new: str | Path, target: str | Path) -> None:
    """Move folder ``new`` to ``target``, replacing an existing ``target`` without a moment in
    which neither the old nor the new folder exists in full: the old one is renamed aside,
    the new one renamed in, and only then is the old one deleted. If the second rename
    fails, the old folder is put back and ``new`` is left where it was."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
    os.replace(target, aside)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def replacing_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same file system, so the rename is atomic)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(target: str | Path, text: str) -> Path:
    with replacing_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_jsonl(rows: Iterable[dict[str, Any]], target: str | Path) -> Path:
    """One JSON object per line, non-ASCII kept readable (role-play corpora are Chinese)."""
    with replacing_file(target) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(target)

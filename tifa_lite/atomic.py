"""Write-then-rename for every artifact a user later reads (merged models, GGUF files,
converted data, pair files): an interrupted or failed write leaves the old file or no
file, never a half-written one that training or llama.cpp would read without noticing.

Temporary names carry the writer's process id — ``.<name>.<label>-<pid>-<random>`` for a
folder, ``.<name>.<pid>-<random>.partial`` for a file — so that a write killed outright
(SIGKILL, power loss: no ``except`` runs) leaves a name the next write of the same output
recognises: :func:`sweep_stale` removes the ones whose process is gone, and never those of
a writer still running."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError

log = logging.getLogger(__name__)


def _umask() -> int:
    # The only portable way to read it is to set it; set straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give ``path`` (and everything under a folder) the modes of a file or folder the user made:
    safetensors writes its files 0600 and ``mkdtemp`` makes 0700, so another user could not
    read the weights of a shared output."""
    mask = _umask()
    path = Path(path)
    entries = [path, *path.rglob("*")] if path.is_dir() and not path.is_symlink() else [path]
    for entry in entries:
        if entry.is_symlink() or not entry.exists():
            continue
        mode = (0o777 if entry.is_dir() else 0o666) & ~mask
        if entry.stat().st_mode & 0o777 != mode:
            os.chmod(entry, mode)


def _temp_tag() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _stale_pattern(name: str) -> re.Pattern[str]:
    """Every temporary name this module makes for ``name``: staging folders, files, the old
    folder :func:`swap_dir` renames aside, and what a writer derives from a temporary file's
    name beside it (the ``.gguf`` probe link, llama.cpp's ``.16bit.gguf`` intermediate)."""
    return re.compile(rf"^\.{re.escape(name)}\.(?:[a-z]+-)?(\d+)-[0-9a-f]+(?:\.partial(?:\.[0-9a-z]+)*)?$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale(target: str | Path) -> list[Path]:
    """Remove what killed writes of ``target`` left beside it; returns what was removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = _stale_pattern(target.name)
    removed = []
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if not match or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        log.warning("removed %d temporary file(s)/folder(s) an interrupted earlier write of %s left: %s",
                    len(removed), target, ", ".join(p.name for p in removed))
    return removed


def check_output_path(path: str | Path, key: str, kind: str = "dir") -> Path:
    """Refuse, before any work, an output that cannot be written: a file where a folder is
    wanted (or the reverse), or a parent folder that is missing-and-uncreatable or read-only.
    ``key`` is what the user typed it as (``train.output_dir``, ``--output``)."""
    path = Path(path).expanduser().resolve()
    if kind == "dir" and path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is an existing file, not a folder. Choose a folder path for {key} "
                          "(or move the file away).")
    if kind == "file" and path.is_dir():
        raise ConfigError(f"{key}={path} is an existing folder, not a file. Choose a file path for {key}, "
                          f"e.g. {path / 'model.gguf'}.")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{key}={path}: {ancestor} is a file, so no folder can be made under it. Choose another {key}.")
    # The writes below happen in the output's parent (temporary siblings) or in a folder made there.
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: the folder {ancestor} is not writable (read-only or not yours). "
                          f"Choose a {key} under a folder you can write to.")
    return path


@contextmanager
def replacing_dir(target: str | Path, label: str = "partial") -> Iterator[Path]:
    """Yield an empty sibling folder of ``target``; it becomes ``target`` when the block
    ends normally (replacing what was there) and is removed when the block raises."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    staging = target.with_name(f".{target.name}.{label}-{_temp_tag()}")
    try:
        # Made inside the try: a signal the moment it exists must still remove it.
        # A plain mkdir, not mkdtemp: the folder becomes the user's output and gets their umask, not 0700.
        staging.mkdir()
        yield staging
        follow_umask(staging)
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
    aside = target.with_name(f".{target.name}.old-{_temp_tag()}")
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
    sweep_stale(target)
    tmp = target.with_name(f".{target.name}.{_temp_tag()}.partial")
    try:
        # Made inside the try: a signal the moment it exists must still remove it.
        # Created with the user's umask (mkstemp would make it 0600, and the rename keeps that).
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        yield tmp
        follow_umask(tmp)  # a writer may have replaced it with a 0600 file of its own
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

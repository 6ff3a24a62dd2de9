"""One writer per output. Two runs into the same ``train.output_dir`` (or merge/export
``--output``) would share one staging folder, delete each other's files and both fail; the
second is refused instead, told which process (PID and command) is writing there.

The lock is ``.<output>.lock`` beside the output, held with ``flock``: the kernel releases it
when its process dies however it dies, so a lock file left by a killed run is free, and the
next run takes it over with a note naming the dead writer. The file is removed when the
writer finishes."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tifa_lite.errors import ConfigError

log = logging.getLogger(__name__)

_held: set[Path] = set()  # this process's locks: a nested write of the same output is not a second run


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def this_command() -> str:
    if Path(sys.argv[0]).name in ("tifa-lite", "__main__.py"):
        return shlex.join(["tifa-lite", *sys.argv[1:]])
    return shlex.join([Path(sys.executable).name, *sys.argv]) or "python"


@contextmanager
def output_lock(target: str | Path, key: str) -> Iterator[None]:
    """Hold the lock of ``target`` for the block; :class:`ConfigError` naming the live writer's
    PID and command when another process holds it. ``key`` is what the user typed the path as."""
    target = Path(target).expanduser().resolve()
    if target in _held:
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(target)
    fd = None
    try:
        fd = _acquire(path, target, key)
        _held.add(target)
        previous = _read(fd)
        if previous:
            log.warning("%s: took over the lock of a run that is no longer running (PID %s: %s).",
                        target, previous.get("pid"), previous.get("command"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": this_command(), "started": time.time()}).encode(), 0)
        yield
    finally:
        if fd is not None:
            _held.discard(target)
            # Removed while still locked: a run waiting on this inode then sees it is gone (_acquire).
            path.unlink(missing_ok=True)
            os.close(fd)


def _acquire(path: Path, target: Path, key: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            since = time.strftime("%H:%M:%S", time.localtime(holder["started"])) if "started" in holder else "?"
            raise ConfigError(
                f"{key}={target} is being written by another run: PID {holder.get('pid', '?')}, "
                f"`{holder.get('command', '?')}` (since {since}). Wait for it to finish (or stop it), "
                f"or choose another {key}."
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file its last holder had just removed: take the new one


def _read(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

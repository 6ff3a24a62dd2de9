"""A full disk said in one line: ``no space on <filesystem>: need about N GB, have M``.

Before training, merging and exporting, the space the write needs (estimated from the model's
shape by :mod:`tifa_lite.planner.disk`) is compared with what is free where it goes, so a run
does not die at its final save. Whatever still runs out later — a checkpoint (torch says
``enforce fail at inline_container.cc … unexpected pos``), safetensors (``IoError … StorageFull``),
any Python write (``OSError: [Errno 28]``) — is turned into the same line by :func:`translating`."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tifa_lite.errors import TifaError

# How the libraries that do not raise OSError word it.
FULL_MARKERS = ("No space left on device", "StorageFull", "unexpected pos", "Disk quota exceeded")


class DiskFullError(TifaError, OSError):
    """The file system an output goes to has (or will have) no room for it."""


def _existing(path: Path) -> Path:
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def filesystem(path: str | Path) -> str:
    """``/mount/point (fstype)`` of the file system ``path`` is (or would be) on."""
    path = _existing(Path(path)).resolve()
    mount = path
    while mount != mount.parent and not os.path.ismount(mount):
        mount = mount.parent
    fstype = ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 2 and fields[1].replace("\\040", " ") == str(mount):
                    fstype = fields[2]  # the last mount on a point is the one in effect
    except OSError:
        pass
    return f"{mount} ({fstype})" if fstype else str(mount)


def free_bytes(path: str | Path) -> int:
    return shutil.disk_usage(_existing(Path(path))).free


def size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def message(path: str | Path, need: float | None, key: str | None = None) -> str:
    have = free_bytes(path)
    line = f"no space on {filesystem(path)}: " + (f"need about {size(need)}, have {size(have)}" if need
                                                   else f"need more than the {size(have)} free")
    return line + f" (writing {path}). Free space there" + (f" or choose another {key}." if key else ".")


def require(path: str | Path, need: float, key: str) -> None:
    """Refuse before the work when ``need`` bytes will not fit where ``path`` goes."""
    if free_bytes(path) < need:
        raise DiskFullError(message(path, need, key))


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, DiskFullError):
        return False  # already said
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, Exception) and any(marker in str(exc) for marker in FULL_MARKERS)


@contextmanager
def translating(path: str | Path, need: float | None = None, key: str | None = None) -> Iterator[None]:
    """A write under ``path`` that runs out of space raises :class:`DiskFullError` instead."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        target = getattr(exc, "filename", None) or path
        raise DiskFullError(message(target, need, key)) from None

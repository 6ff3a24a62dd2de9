"""Is a weights file whole? Checked before anything loads it, from its size and header alone.

A copy cut short (a full disk, a killed ``cp``/``rsync``, an interrupted download) or a
header overwritten otherwise surfaces as a ``SafetensorError`` deep inside a library, or,
for a checkpoint, as a crash after minutes of model loading on every rerun. A safetensors
file is an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
shape and ``data_offsets`` into the data that follows, then that data: so reading those
few kilobytes tells whether the file holds exactly the bytes its header promises. Torch's
own files (``optimizer.pt``, ``adapter_model.bin``) are zip archives, whose directory sits
at the very end and is gone when the file is cut short.

No torch import: ``plan`` and the config checks call this too.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from tifa_lite.errors import TifaError

# safetensors' own limit on the header (its reader refuses anything larger).
MAX_HEADER = 100_000_000
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8,
    "U64": 8, "F64": 8, "C64": 8,
}
TORCH_ZIP_SUFFIXES = (".pt", ".pth", ".bin")


class CorruptFileError(TifaError):
    """A weights file is cut short or its header is damaged; the message names the file."""


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _broken(path: Path, what: str) -> CorruptFileError:
    return CorruptFileError(
        f"{path}: damaged safetensors file ({what}). It was probably cut short by an interrupted copy, "
        "download or save, or a full disk; copy or download it again, or re-create it."
    )


def check_safetensors(path: str | Path) -> None:
    """Raise :class:`CorruptFileError` unless ``path``'s header parses and its tensors'
    offsets tile the data that follows it exactly."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise _broken(path, f"{size} bytes, shorter than the 8-byte header length")
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length == 0 or length > MAX_HEADER:
            raise _broken(path, f"the header length reads {length}: the header is zeroed or overwritten")
        if 8 + length > size:
            raise _broken(path, f"the header says it is {_size(length)} long but the file holds {_size(size)}")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise _broken(path, f"the header is not valid JSON: {exc}") from None
    data = size - 8 - length
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(x) for x in entry["data_offsets"])
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            expected = count * DTYPE_BYTES.get(entry["dtype"], 0)
        except (KeyError, TypeError, ValueError):
            raise _broken(path, f"the header entry for {name!r} has no usable dtype/shape/data_offsets") from None
        if stop < begin or (entry["dtype"] in DTYPE_BYTES and stop - begin != expected):
            raise _broken(path, f"the header entry for {name!r} does not match its shape")
        end = max(end, stop)
    if end != data:
        raise _broken(path, f"its header describes {_size(end)} of tensor data but the file holds {_size(data)}")


def check_torch_zip(path: str | Path) -> None:
    """A torch-saved file (zip) whose central directory is readable; an old pickle-format
    file is not a zip and is left to torch."""
    path = Path(path)
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptFileError(
            f"{path}: damaged file ({exc}). It was probably cut short by an interrupted save or a full disk; "
            "re-create it."
        ) from None


def check_weights_folder(folder: str | Path, torch_files: bool = False) -> None:
    """Every ``*.safetensors`` file in ``folder`` (and every shard its index names) is whole;
    with ``torch_files``, every ``*.pt``/``*.pth``/``*.bin`` too (a training checkpoint)."""
    folder = Path(folder)
    for index in folder.glob("*.safetensors.index.json"):
        try:
            names = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{index}: damaged index file ({exc}); copy or download it again.") from None
        missing = sorted(n for n in names if not (folder / n).is_file())
        if missing:
            raise CorruptFileError(
                f"{index} names {len(missing)} shard(s) that are not there ({', '.join(missing[:3])}); "
                "the copy or download is incomplete."
            )
    for file in sorted(folder.glob("*.safetensors")):
        check_safetensors(file)
    if torch_files:
        for file in sorted(p for p in folder.iterdir() if p.suffix in TORCH_ZIP_SUFFIXES and p.is_file()):
            check_torch_zip(file)


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """Why a Trainer checkpoint folder cannot be resumed from (None: it looks whole)."""
    checkpoint = Path(checkpoint)
    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except FileNotFoundError:
        return f"{state} is missing"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"{state} is damaged"
    try:
        check_weights_folder(checkpoint, torch_files=True)
    except CorruptFileError as exc:
        return str(exc).split(". It was probably")[0]
    return None

"""Text files are read as UTF-8 (a BOM is dropped) or refused with a message that names the
file and line and, where it can, the encoding the file is probably in.

A file is never decoded in a guessed encoding or with replacement characters: a wrong
guess would train on mojibake without anyone noticing. The guess only goes into the
error message; it comes from charset-normalizer (installed with ``requests`` anyway),
which recognises the GBK/GB18030 exports of Chinese tools.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from tifa_lite.errors import DataError

UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def decode(raw: bytes, path: str | Path, line: int | None = None, head: bytes | None = None) -> str:
    """``raw`` as text: a whole file (``line=None``; a BOM is dropped) or its line ``line``;
    ``head``, the file's first bytes, tells a binary or UTF-16 file from a line of bad text."""
    try:
        return raw.decode("utf-8-sig" if line in (None, 1) else "utf-8")
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        if line is None:
            line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - start + 1
        problem = describe_undecodable(raw, exc, column, Path(path), raw if head is None else head)
        raise DataError(f"{path}:{line}: {problem}") from None


def read_text(path: str | Path) -> str:
    path = Path(path)
    return decode(path.read_bytes(), path)


def describe_undecodable(raw: bytes, exc: UnicodeDecodeError, column: int, path: Path, head: bytes) -> str:
    """What is wrong and what to do, for bytes that are not UTF-8."""
    convert = f"iconv -f {{}} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}"
    if head.startswith(UTF16_BOMS):
        return f"the file is UTF-16, not UTF-8. Convert it first: {convert.format('UTF-16')}"
    if b"\x00" in head[:4096]:
        return "not a text file (it holds NUL bytes); data files must be UTF-8 text."
    found = f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {column})"
    guess = guess_encoding(raw)
    if guess:
        return f"{found}; it looks like {guess}. Convert it first: {convert.format(guess)}"
    return f"{found}. Save it as UTF-8, or convert it: {convert.format('<its encoding>')}"


def guess_encoding(raw: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    # Without a BOM or NUL bytes (handled above) a UTF-16/32 guess is charset-normalizer
    # misreading short Latin text; no guess is better than a wrong one.
    if best is None or best.encoding.startswith(("utf_8", "ascii", "utf_16", "utf_32")):
        return None
    return best.encoding.upper().replace("_", "-")

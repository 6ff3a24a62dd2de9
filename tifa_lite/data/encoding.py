"""Text files are read as UTF-8 (a BOM is dropped) or refused with a message that names the
file and line and, where it can, the encoding the file is probably in.

A file is never decoded in a guessed encoding or with replacement characters: a wrong
guess would train on mojibake without anyone noticing. The guess only goes into the
error message; it comes from charset-normalizer (installed with ``requests`` anyway),
corrected towards GB18030 when the bytes read as Chinese: on a short line it takes GBK
for CP949, and ``iconv -f CP949`` would turn the Chinese into Korean-looking garbage.
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
    if head.startswith(b"PAR1"):
        return f"a Parquet file named {path.name}: name it {path.stem}.parquet to have it read as Parquet."
    if head.startswith(b"\x1f\x8b"):
        return f"a gzip-compressed file named {path.name}: name it {path.name}.gz (e.g. data.jsonl.gz) to have it read."
    if b"\x00" in head[:4096]:
        return "not a text file (it holds NUL bytes); data files must be UTF-8 text."
    found = f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {column})"
    guess = guess_encoding(raw)
    if guess:
        return f"{found}; it looks like {guess}. Convert it first: {convert.format(guess)}"
    return f"{found}. Save it as UTF-8, or convert it: {convert.format('<its encoding>')}"


# GB18030 is a superset of GB2312 and GBK, so one name converts every mainland export.
CHINESE = "GB18030"
CHINESE_FAMILY = ("gb2312", "gbk", "gb18030", "hz")
# Each East Asian code page decodes the others' bytes too (into the wrong characters); the
# reading that is made of its own script is the right one.
SCRIPTS = {
    "chinese": ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0x3000, 0x303F), (0xFF00, 0xFFEF)),
    "korean": ((0xAC00, 0xD7A3), (0x3130, 0x318F), (0x3000, 0x303F), (0xFF00, 0xFFEF)),
    "japanese": ((0x3040, 0x30FF), (0x4E00, 0x9FFF), (0x3000, 0x303F), (0xFF00, 0xFFEF)),
}
SCRIPT_OF = {"cp949": "korean", "euc_kr": "korean", "johab": "korean", "iso2022_kr": "korean",
             "cp932": "japanese", "shift_jis": "japanese", "euc_jp": "japanese", "iso2022_jp": "japanese"}


def guess_encoding(raw: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    # Without a BOM or NUL bytes (handled above) a UTF-16/32 guess is charset-normalizer
    # misreading short Latin text; no guess is better than a wrong one.
    if best is None or best.encoding.startswith(("utf_8", "ascii", "utf_16", "utf_32")):
        return CHINESE if script_share(raw, "gb18030", "chinese") >= 0.9 else None
    if best.encoding in CHINESE_FAMILY:
        return CHINESE
    # A short GBK line often scores as CP949 (Korean): prefer Chinese when the bytes read as
    # Chinese text and not better as the guessed code page's own script.
    script = SCRIPT_OF.get(best.encoding)
    if script:
        chinese = script_share(raw, "gb18030", "chinese")
        if chinese >= 0.9 and chinese > script_share(raw, best.encoding, script):
            return CHINESE
    return best.encoding.upper().replace("_", "-")


def script_share(raw: bytes, encoding: str, script: str) -> float:
    """The share of ``raw``'s non-ASCII characters, decoded as ``encoding``, that belong to
    ``script``; 0 when the bytes do not decode."""
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return 0.0
    wide = [ord(ch) for ch in text if ord(ch) > 0x7F]
    if not wide:
        return 0.0
    ranges = SCRIPTS[script]
    return sum(any(lo <= cp <= hi for lo, hi in ranges) for cp in wide) / len(wide)

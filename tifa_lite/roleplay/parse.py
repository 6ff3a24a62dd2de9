"""Dialogue corpora → a list of scenes, each a list of :class:`Line`.

Hand-written because no library reads these script formats: the Chat-Haruhi-Suzumiya
corpora (``Name:「…」``, with wiki markup from the fan wikis they were scraped from),
plain ``Name: …`` scripts, and two-column CSV (``character,line``, parsed with the
stdlib :mod:`csv`). One file is one scene: context never crosses a file boundary.

Lines without a speaker, with a narrator speaker (``旁白``, ``Scene``, ``Narrator`` …)
or an empty one (``:「(Leonard leaves.)」``) are kept as narration: they give the next
user turn its setting. A line that cannot be trusted is dropped and its reason counted,
so the stats report says exactly what was lost and where.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tifa_lite.data.encoding import read_text
from tifa_lite.errors import DataError

NARRATOR_NAMES = {"", "旁白", "scene", "narrator", "narration", "场景", "画外音", "stage", "setting"}
TEXT_SUFFIXES = {".txt", ".csv", ".tsv"}
CSV_HEADER_SPEAKER = {"character", "speaker", "name", "role", "角色", "人物"}

# `Name:「text」` (ASCII or full-width colon; the closing bracket may be missing — see parse_line).
_BRACKET_RE = re.compile(r"^(?P<name>[^:：「」]{0,40})[:：]\s*「(?P<text>.*)$")
# `Name: text` — a speaker is short and has no sentence punctuation, so prose with a colon
# ("Note: the lab was empty") would still be read as a speaker; the length cap keeps that rare.
_PLAIN_RE = re.compile(r"^(?P<name>[^:：「」.!?。！？,，\"“”]{1,30})[:：]\s*(?P<text>.*)$")
_WIKI_LINK_RE = re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]")


@dataclass(frozen=True)
class Line:
    speaker: str | None  # None = narration / scene description
    text: str
    source: str  # "file:line", for reports and error messages


@dataclass
class ParseReport:
    files: int = 0
    lines_read: int = 0
    utterances: int = 0
    narration: int = 0
    dropped: Counter = field(default_factory=Counter)
    # First few examples per reason ("file:line: text"), so a user can find them.
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, source: str, raw: str) -> None:
        self.dropped[reason] += 1
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < 3:
            bucket.append(f"{source}: {raw[:80]}")


def clean_markup(text: str) -> str:
    """Strip the MediaWiki markup the fan-wiki transcripts carry: [[Page|shown]] and ''italics''."""
    text = _WIKI_LINK_RE.sub(r"\1", text)
    text = re.sub(r"'{2,}", "", text)
    return re.sub(r"\s+", " ", text).strip()


def is_narrator(name: str) -> bool:
    return name.strip().lower() in NARRATOR_NAMES


def parse_line(raw: str, source: str, report: ParseReport) -> Line | None:
    """One script line → a Line, or None (blank, or dropped with a counted reason)."""
    stripped = raw.strip().lstrip("\ufeff")
    if not stripped:
        return None
    m = _BRACKET_RE.match(stripped)
    if m:
        body = m.group("text").rstrip()
        if not body.endswith("」"):
            # A truncated line may have lost its end; training on half a sentence teaches the
            # character to stop mid-thought, so drop it rather than guess.
            report.drop("unclosed 「 (line cut off?)", source, stripped)
            return None
        return _make(m.group("name"), body[:-1], source, stripped, report)
    m = _PLAIN_RE.match(stripped)
    if m:
        return _make(m.group("name"), m.group("text"), source, stripped, report)
    return _make(None, stripped, source, stripped, report)


def _make(name: str | None, text: str, source: str, raw: str, report: ParseReport) -> Line | None:
    text = clean_markup(text)
    speaker = clean_markup(name) if name is not None else None
    if speaker is not None and is_narrator(speaker):
        speaker = None
    if not text:
        report.drop("empty text", source, raw)
        return None
    if speaker is None:
        report.narration += 1
    else:
        report.utterances += 1
    return Line(speaker, text, source)


def parse_text(content: str, name: str, report: ParseReport) -> list[Line]:
    lines = []
    for number, raw in enumerate(content.splitlines(), 1):
        report.lines_read += 1
        line = parse_line(raw, f"{name}:{number}", report)
        if line is not None:
            lines.append(line)
    return lines


def parse_csv(content: str, name: str, report: ParseReport, delimiter: str = ",") -> list[Line]:
    """``character,line`` rows; a header row is recognised and skipped."""
    lines = []
    for number, row in enumerate(csv.reader(io.StringIO(content), delimiter=delimiter), 1):
        source = f"{name}:{number}"
        if not row or all(not cell.strip() for cell in row):
            continue
        report.lines_read += 1
        if number == 1 and row[0].strip().lower() in CSV_HEADER_SPEAKER:
            continue
        if len(row) != 2:
            report.drop(f"CSV row with {len(row)} columns (expected character,line)", source, delimiter.join(row))
            continue
        line = _make(row[0].strip(), row[1], source, delimiter.join(row), report)
        if line is not None:
            lines.append(line)
    return lines


def parse_file(path: Path, report: ParseReport) -> list[Line]:
    report.files += 1
    content = read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return parse_csv(content, str(path), report)
    if suffix == ".tsv":
        return parse_csv(content, str(path), report, delimiter="\t")
    return parse_text(content, str(path), report)


def _natural_key(path: Path):
    # text_2 before text_10, so scene order (and the held-out split) is stable and readable.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def collect_files(paths: list[str | Path]) -> list[Path]:
    """Files and folders (every .txt/.csv/.tsv inside, recursively) in natural order."""
    found: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        if path.is_dir():
            found.extend(sorted((p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file()), key=_natural_key))
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"--texts {item}: no such file or folder.")
    if not found:
        raise DataError(f"--texts {', '.join(map(str, paths))}: no .txt/.csv/.tsv files found.")
    return found


def parse_corpus(paths: list[str | Path], report: ParseReport | None = None) -> tuple[list[list[Line]], ParseReport]:
    """Every file → one scene."""
    report = report or ParseReport()
    scenes = [parse_file(path, report) for path in collect_files(paths)]
    return scenes, report

"""Reading records from local files (JSONL, JSON, TXT), folders, globs, or hub /
ModelScope data sets, with every record tagged by where it came from (``file:line``)
so that a bad record is reported where the user can fix it."""

from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tifa_lite.data.encoding import decode, read_text
from tifa_lite.errors import DataError

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".jsonl", ".json", ".txt", ".csv", ".tsv", ".parquet", ".jsonl.gz", ".json.gz")


def data_kind(path: Path) -> str:
    """The reader for ``path``, by its full suffix (``x.jsonl.gz`` is gzip-compressed JSON Lines)."""
    name = path.name.lower()
    for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ".jsonl"


@dataclass
class Record:
    data: Any  # dict for JSON rows, str for a text file
    where: str  # "path:line" or "path" or "hub-id[row]"


@dataclass
class SkipReport:
    """Counts of records dropped under ``data.on_error: skip``, with the first few reasons."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, detail: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        return f"skipped {self.total} record(s): {parts}" if self.total else "no records skipped"


def expand_paths(spec: str | list[str], key: str = "data.path") -> list[Path]:
    specs = [spec] if isinstance(spec, str) else list(spec)
    paths: list[Path] = []
    for item in specs:
        path = Path(item).expanduser()
        if any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            if not matches:
                raise DataError(f"{key}: the pattern {item} matches no file.")
            paths.extend(m for m in matches if m.is_file())
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.name.lower().endswith(DATA_SUFFIXES) and p.is_file())
            if not found:
                raise DataError(f"{key}: folder {path} holds no {'/'.join(DATA_SUFFIXES)} files.")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"{key}: {path} does not exist. Point {key} at a JSONL/JSON/TXT/CSV/Parquet file or folder.")
    return paths


def is_local_spec(spec: str | list[str]) -> bool:
    items = [spec] if isinstance(spec, str) else spec
    return all(
        Path(s).expanduser().exists() or any(ch in s for ch in "*?[") or s.startswith((".", "/", "~"))
        or s.lower().endswith(DATA_SUFFIXES)
        for s in items
    )


def iter_records(
    spec: str | list[str],
    on_error: str = "raise",
    skipped: SkipReport | None = None,
    key: str = "data.path",
    source: str = "auto",
    split: str = "train",
) -> Iterator[Record]:
    if source in ("hf", "modelscope") or (source == "auto" and not is_local_spec(spec)):
        yield from _iter_hub(spec, source, split, key)
        return
    skipped = skipped if skipped is not None else SkipReport()
    for path in expand_paths(spec, key):
        kind = data_kind(path)
        if kind == ".txt":
            records = _iter_txt(path)
        elif kind in (".json", ".json.gz"):
            records = _iter_json(path)
        elif kind in (".csv", ".tsv"):
            records = _iter_csv(path, "\t" if kind == ".tsv" else ",")
        elif kind == ".parquet":
            records = _iter_parquet(path)
        else:
            records = _iter_jsonl(path, on_error, skipped)
        empty, skipped_before = True, skipped.total
        for record in records:
            empty = False
            yield record
        if empty and skipped.total == skipped_before:  # no record at all, not only bad ones
            _empty_file(path, key, on_error, skipped)


def _empty_file(path: Path, key: str, on_error: str, skipped: SkipReport) -> None:
    message = f"{path}: the file is empty (no records)"
    if on_error == "skip":
        skipped.add("empty file", message)
        return
    raise DataError(f"{message}. Fill it, or leave it out of {key} (data.on_error=skip skips empty files).")


def _iter_txt(path: Path) -> Iterator[Record]:
    text = read_text(path)
    if text.strip():
        yield Record(text, str(path))


def _iter_csv(path: Path, delimiter: str = ",") -> Iterator[Record]:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    for row in reader:
        # A quoted field may span lines: the record is named by the line it ends on.
        yield Record(dict(row), f"{path}:{reader.line_num}")


def _iter_parquet(path: Path) -> Iterator[Record]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}).") from None
    index = 0
    for batch in table.iter_batches():
        for row in batch.to_pylist():
            # A table has every column in every row: a cell another format's rows filled is null here.
            yield Record({k: v for k, v in row.items() if v is not None}, f"{path}[{index}]")
            index += 1


def _open_binary(path: Path):
    """``path`` for reading bytes, decompressed when it is a ``.gz``."""
    if not path.name.lower().endswith(".gz"):
        return path.open("rb")
    import gzip

    return gzip.open(path, "rb")


def _read_bytes(path: Path) -> bytes:
    import gzip
    import zlib

    with _open_binary(path) as fh:
        try:
            return fh.read()
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: not a readable gzip file ({exc}); it may be cut short.") from None


def _iter_jsonl(path: Path, on_error: str, skipped: SkipReport) -> Iterator[Record]:
    # Bytes, decoded line by line, so a file that is not UTF-8 is reported at its first bad line.
    import gzip
    import zlib

    with _open_binary(path) as fh:
        try:
            head = fh.read(4096)
            fh.seek(0)
            # A damaged .gz fails part-way through: read it whole first, to fail before any record.
            lines = list(fh) if isinstance(fh, gzip.GzipFile) else fh
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: not a readable gzip file ({exc}); it may be cut short.") from None
        for lineno, raw in enumerate(lines, start=1):
            line = decode(raw, path, lineno, head)
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                message = f"{where}: malformed JSON ({exc.msg} at column {exc.colno})"
                if on_error == "skip":
                    skipped.add("malformed JSON", message)
                    continue
                raise DataError(message + f". {_whole_file_hint(path, lineno, line)}"
                                "Fix the line, or set data.on_error=skip to skip bad lines.") from None
            if not isinstance(row, dict):
                message = f"{where}: expected a JSON object per line, got {_json_kind(row)}"
                if on_error == "skip":
                    skipped.add("not an object", message)
                    continue
                raise DataError(f"{message}. {_not_object_hint(path, lineno, row)}")
            yield Record(row, where)


def _json_kind(value: Any) -> str:
    return {list: "a JSON array", str: "a JSON string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number")


def _not_object_hint(path: Path, lineno: int, row: Any) -> str:
    """What the file probably is, and how to make it one object per line."""
    json_name = path.with_suffix(".json").name
    if isinstance(row, list) and row and all(isinstance(r, dict) for r in row):
        if lineno == 1:
            return (f"The file looks like one JSON array of {len(row)} records saved as .jsonl. Rename it to "
                    f"{json_name} (a .json file is read as an array of records), or write one object per line.")
        return "This line holds an array of records: put each record on a line of its own."
    if isinstance(row, str) and row.lstrip().startswith("{"):
        return ("The line is a record that was JSON-encoded twice (an object inside a string). Write the object "
                "itself on the line (json.dumps(record) once, not json.dumps(json.dumps(record))).")
    return 'Each line of a .jsonl file must be one object, e.g. {"messages": [...]}.'


def _whole_file_hint(path: Path, lineno: int, line: str) -> str:
    """A pretty-printed JSON document or array spreads over lines; line by line it is malformed."""
    if lineno == 1 and line.strip() in ("[", "{", "[{"):
        try:
            data = json.loads(read_text(path))
        except (json.JSONDecodeError, DataError):
            return ""
        what = f"an array of {len(data)} records" if isinstance(data, list) else "one JSON object"
        return (f"The file is {what} written over several lines, not JSON Lines. Rename it to "
                f"{path.with_suffix('.json').name} (read as JSON), or write one object per line. ")
    return ""


def _iter_json(path: Path) -> Iterator[Record]:
    text = decode(_read_bytes(path), path)
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}).") from None
    rows = data if isinstance(data, list) else [data]
    for index, row in enumerate(rows):
        yield Record(row, f"{path}[{index}]")


def _iter_hub(spec: str | list[str], source: str, split: str, key: str) -> Iterator[Record]:
    name = spec if isinstance(spec, str) else spec[0]
    if source == "modelscope":
        try:
            from modelscope.msdatasets import MsDataset
        except ImportError:
            raise DataError(f"{key}={name} with data.source=modelscope needs: pip install modelscope") from None
        dataset = MsDataset.load(name, split=split)
    else:
        import datasets

        try:
            dataset = datasets.load_dataset(name, split=split)
        except Exception as exc:  # the hub raises many types; the user needs the id and the cause
            raise DataError(
                f"{key}={name}: not a local file, and loading it as a hub data set failed ({exc}). "
                "Check the path, or the id and your network."
            ) from None
    for index, row in enumerate(dataset):
        yield Record(dict(row), f"{name}[{index}]")

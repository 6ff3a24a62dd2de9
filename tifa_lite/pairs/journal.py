"""Pair builds that survive being killed.

Each prompt's outcome (its pair, or why it gave none) is appended to ``<out>.partial`` and
flushed the moment it is known, so a build that is killed after an hour of sampling keeps
that hour: run the same command again and only the prompts not yet done are generated.
The journal starts with the build's settings; a journal written with other settings (another
model, --min-gap, --limit …) is not resumed but started over, since its pairs would not be
what the command asks for. The output file itself is written once, atomically, when every
prompt is done and at least one pair was built; then the journal is removed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tifa_lite.atomic import replacing_file, write_jsonl
from tifa_lite.errors import DataError
from tifa_lite.pairs.builders import BuildReport, Outcome, collect
from tifa_lite.pairs.prompts import PromptItem

log = logging.getLogger(__name__)


def journal_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


class PairJournal:
    def __init__(self, out: str | Path, settings: dict[str, Any]):
        self.out = Path(out)
        self.path = journal_path(self.out)
        self.settings = json.loads(json.dumps(settings, default=str))  # as it reads back
        self.outcomes: dict[str, dict[str, Any]] = {}
        self._fh = None

    def __enter__(self) -> "PairJournal":
        lines = self._read()
        # Rewritten whole (atomically) rather than appended to: a kill mid-line leaves a torn
        # last line, and the next record must not be glued onto it.
        with replacing_file(self.path) as tmp, tmp.open("w", encoding="utf-8") as fh:
            for line in [{"settings": self.settings}, *lines]:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._fh = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the torn last line of a killed build
        if not rows or rows[0].get("settings") != self.settings:
            log.warning("%s is from a build with other settings (or unreadable): starting over.", self.path)
            return []
        for row in rows[1:]:
            self.outcomes[row["source"]] = row
        if self.outcomes:
            log.info("resuming %s: %d prompt(s) already done", self.path, len(self.outcomes))
        return rows[1:]

    @property
    def done(self) -> set[str]:
        return set(self.outcomes)

    def record(self, outcome: Outcome) -> None:
        row = {"source": outcome.item.where, "pair": outcome.pair, "skipped": outcome.skipped}
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.outcomes[row["source"]] = row

    def finish(self, items: list[PromptItem]) -> BuildReport:
        """Write the pairs (in prompt order) to the output and drop the journal. No pair at all
        is an error, and nothing is written: an empty file would train nothing, silently."""
        known = [self.outcomes[i.where] for i in items if i.where in self.outcomes]
        pairs, report = collect((Outcome(None, r["pair"], r["skipped"]) for r in known), len(items))
        self.__exit__()
        if not pairs:
            self.path.unlink(missing_ok=True)
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items())) or "no prompts"
            raise DataError(
                f"{self.out}: no preference pairs from {report.prompts} prompt(s) ({reasons}); nothing written. "
                "Use more prompts, or loosen the builder's filters (--min-gap, --min-units, --samples)."
            )
        write_jsonl(pairs, self.out)
        self.path.unlink(missing_ok=True)  # only now: a failed write keeps the work for the next run
        return report

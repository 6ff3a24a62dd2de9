"""The pair journal: a torn last line (a kill mid-write) and changed settings."""

import json

from tifa_lite.pairs import PromptItem
from tifa_lite.pairs.builders import Outcome
from tifa_lite.pairs.journal import PairJournal, journal_path


def item(n):
    return PromptItem([{"role": "user", "content": f"q{n}"}], None, f"p.jsonl:{n}")


def pair(n):
    return {"prompt": item(n).prompt, "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}], "source": item(n).where}


def test_torn_last_line_is_dropped_and_the_rest_resumed(tmp_path):
    out = tmp_path / "pairs.jsonl"
    with PairJournal(out, {"min_gap": 0.1}) as journal:
        journal.record(Outcome(item(1), pair(1)))
        journal.record(Outcome(item(2), skipped="gap below min_gap"))
    with journal_path(out).open("a", encoding="utf-8") as fh:
        fh.write('{"source": "p.jsonl:3", "pair": {"prom')  # killed mid-write
    with PairJournal(out, {"min_gap": 0.1}) as journal:
        assert journal.done == {"p.jsonl:1", "p.jsonl:2"}
        journal.record(Outcome(item(3), pair(3)))
        report = journal.finish([item(1), item(2), item(3)])
    assert (report.prompts, report.pairs, report.skipped) == (3, 2, {"gap below min_gap": 1})
    assert [json.loads(line)["source"] for line in out.read_text().splitlines()] == ["p.jsonl:1", "p.jsonl:3"]
    assert not journal_path(out).exists()


def test_other_settings_start_over(tmp_path):
    out = tmp_path / "pairs.jsonl"
    with PairJournal(out, {"min_gap": 0.1}) as journal:
        journal.record(Outcome(item(1), pair(1)))
    with PairJournal(out, {"min_gap": 0.5}) as journal:
        assert journal.done == set()

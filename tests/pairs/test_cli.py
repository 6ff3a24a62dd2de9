import json

import pytest

from tifa_lite.cli import main
from tifa_lite.pairs import builders
from tifa_lite.pairs.journal import journal_path


def test_pairs_cli_builds_and_scores(tiny_model_dir, sample_data, tmp_path, capsys):
    out = tmp_path / "ref.jsonl"
    data = str(sample_data / "hh_rlhf_sample.jsonl")
    assert main(["pairs", "reference-vs-self", "--model", str(tiny_model_dir), "--data", data, "--limit", "2",
                 "--max-new-tokens", "8", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["prompts"] == 2 and summary["pairs"] + sum(summary["skipped"].values()) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == summary["pairs"]
    assert all(r["builder"] == "reference_vs_self" and "chosen_score" in r for r in rows)

    assert main(["pairs", "repetition", "--model", str(tiny_model_dir), "--data", data, "--limit", "2",
                 "--max-new-tokens", "8", "--samples", "2"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["n"] == 4 and 0.0 <= scored["repetition_rate@3"] <= 1.0


def test_anti_repetition_cli_writes_least_vs_most_repetitive(tiny_model_dir, sample_data, tmp_path, capsys):
    out = tmp_path / "antirep.jsonl"
    assert main(["pairs", "anti-repetition", "--model", str(tiny_model_dir), "--data",
                 str(sample_data / "hh_rlhf_sample.jsonl"), "--limit", "3", "--samples", "3",
                 "--max-new-tokens", "12", "--min-gap", "0", "--min-units", "1", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["prompts"] == 3 and summary["pairs"] + sum(summary["skipped"].values()) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == summary["pairs"] >= 1
    for row in rows:
        assert row["builder"] == "anti_repetition" and len(row["sample_scores"]) == 3
        assert row["chosen_score"] <= row["rejected_score"] == max(row["sample_scores"])
        assert row["chosen"] != row["rejected"]


def test_pairs_cli_reports_bad_data(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n{oops\n')
    assert main(["pairs", "reference-vs-self", "--data", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


def test_zero_pairs_exit_non_zero_and_write_nothing(tiny_model_dir, sample_data, tmp_path, capsys):
    """The tiny random model says nothing under greedy decoding: no pair can be built."""
    out = tmp_path / "ref.jsonl"
    assert main(["pairs", "reference-vs-self", "--model", str(tiny_model_dir), "--data", str(sample_data / "hh_rlhf_sample.jsonl"),
                 "--limit", "2", "--max-new-tokens", "4", "--greedy", "--out", str(out)]) == 2
    assert f"{out}: no preference pairs from 2 prompt(s) (2 empty generation); nothing written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_failed_build_resumes_where_it_stopped_and_matches_an_unbroken_one(tiny_model_dir, sample_data, tmp_path,
                                                                            monkeypatch, capsys):
    real_generate, calls = builders.generate, []

    def failing_on_the_third_batch(model, tokenizer, prompts, settings):
        calls.append(len(prompts))
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real_generate(model, tokenizer, prompts, settings)

    def build(out):
        return main(["pairs", "anti-repetition", "--model", str(tiny_model_dir), "--data", str(sample_data / "hh_rlhf_sample.jsonl"),
                     "--limit", "5", "--samples", "2", "--batch-size", "4", "--max-new-tokens", "12", "--min-gap", "0",
                     "--min-units", "1", "--out", str(out)])

    out = tmp_path / "pairs.jsonl"
    monkeypatch.setattr(builders, "generate", failing_on_the_third_batch)
    with pytest.raises(RuntimeError, match="killed"):
        build(out)
    assert calls == [2, 2, 1] and not out.exists()  # batches of 4 sequences = 2 prompts × 2 samples
    journalled = journal_path(out).read_text(encoding="utf-8").splitlines()
    assert len(journalled) == 1 + 4  # the settings, then one line per finished prompt

    calls.clear()
    assert build(out) == 0
    assert calls == [1]  # only the fifth prompt is generated again
    assert not journal_path(out).exists()
    resumed = out.read_text(encoding="utf-8")

    monkeypatch.setattr(builders, "generate", real_generate)
    assert build(tmp_path / "unbroken.jsonl") == 0
    assert resumed == (tmp_path / "unbroken.jsonl").read_text(encoding="utf-8")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["prompts"] == 5 and summary["pairs"] == len(resumed.splitlines()) >= 1

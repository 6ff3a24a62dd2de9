import json

from tifa_lite.cli import main


def test_pairs_cli_builds_and_scores(tiny_model_dir, sample_data, tmp_path, capsys):
    out = tmp_path / "ref.jsonl"
    data = str(sample_data / "hh_rlhf_sample.jsonl")
    assert main(["pairs", "reference-vs-self", "--model", str(tiny_model_dir), "--data", data, "--limit", "2",
                 "--max-new-tokens", "8", "--greedy", "--out", str(out)]) == 0
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

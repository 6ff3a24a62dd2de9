"""`tifa-lite data roleplay` on the shipped scenes (English and Chinese, data/roleplay) and,
in the integration group, on the whole shared corpora."""

from __future__ import annotations

import json

import pytest

from tifa_lite.cli import main


def read_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def sheldon_english(texts, tmp_path, capsys):
    out = tmp_path / "sheldon.jsonl"
    report = tmp_path / "report.json"
    files = [str(texts / f"text_{i}.txt") for i in range(10)]
    assert main(["data", "roleplay", "--texts", *files, "--character", "Sheldon", "--out", str(out), "--report", str(report)]) == 0
    rows = read_rows(out)
    stats = json.loads(report.read_text(encoding="utf-8"))
    assert len(rows) == stats["conversations"] > 20
    first = rows[0]["messages"]
    assert first[0]["role"] == "system" and "Sheldon" in first[0]["content"]  # system_prompt.txt found
    assert all([m["role"] for m in r["messages"]] == ["system", "user", "assistant"] for r in rows)
    assert "wrote" in capsys.readouterr().out
    return rows


def baizhantang_multi_turn(texts, tmp_path):
    out = tmp_path / "bai.jsonl"
    assert main([
        "data", "roleplay", "--texts", str(texts), "--character", "白展堂", "--alias", "展堂",
        "--multi-turn", "--max-turns", "3", "--no-system-prompt", "--keep-source", "--out", str(out),
    ]) == 0
    rows = read_rows(out)
    assert any(len(r["messages"]) == 6 for r in rows)
    assert all(r["messages"][0]["role"] == "user" for r in rows)
    assert rows[0]["source"].startswith(str(texts))
    assert any("葵花点穴手" in m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant")
    return rows


def test_cli_sheldon_english(sample_data, tmp_path, capsys):
    sheldon_english(sample_data / "roleplay" / "Sheldon" / "texts", tmp_path, capsys)


def test_cli_baizhantang_chinese_multi_turn(sample_data, tmp_path):
    rows = baizhantang_multi_turn(sample_data / "roleplay" / "baizhantang" / "texts", tmp_path)
    assert len(rows) == 6  # the four shipped scenes: 1 + 2 + 2 + 1 conversations


@pytest.mark.integration
def test_cli_on_the_whole_shared_corpora(shared_data, tmp_path, capsys):
    shipped = sheldon_english(shared_data / "roleplay" / "Sheldon" / "texts", tmp_path, capsys)
    assert shipped[0]["messages"][1]["content"]
    rows = baizhantang_multi_turn(shared_data / "roleplay" / "baizhantang" / "texts", tmp_path)
    assert len(rows) > 100


def test_cli_no_conversations_is_a_clear_error(tmp_path, capsys):
    scene = tmp_path / "s.txt"
    scene.write_text("Penny:「Hi.」\n", encoding="utf-8")
    assert main(["data", "roleplay", "--texts", str(scene), "--character", "Sheldon", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no conversations for --character 'Sheldon'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_shipped_samples_are_disjoint(sample_data):
    def assistant_sources(name):
        return [json.loads(l) for l in (sample_data / name).read_text(encoding="utf-8").splitlines()]

    train = assistant_sources("roleplay_sheldon_sample.jsonl")
    held = assistant_sources("roleplay_sheldon_heldout.jsonl")
    assert 150 <= len(train) <= 300 and len(held) >= 50
    train_pairs = {(r["messages"][1]["content"], r["messages"][2]["content"]) for r in train}
    assert not any((r["messages"][1]["content"], r["messages"][2]["content"]) in train_pairs for r in held)


def test_report_is_written_atomically(sample_data, tmp_path, monkeypatch, capsys):
    """A write that fails half-way (a full disk) keeps the previous report whole."""
    import pathlib

    report = tmp_path / "report.json"
    report.write_text('{"conversations": 1}', encoding="utf-8")
    real_write_text = pathlib.Path.write_text

    def disk_full(self, text, *args, **kwargs):
        if self.parent == tmp_path and self.name != "out.jsonl":
            real_write_text(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(28, "No space left on device")
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", disk_full)
    texts = sample_data / "roleplay" / "Sheldon" / "texts"
    code = main(["data", "roleplay", "--texts", str(texts / "text_0.txt"), "--character", "Sheldon",
                 "--out", str(tmp_path / "out.jsonl"), "--report", str(report)])
    assert code == 2 and "error: no space on " in capsys.readouterr().err  # one line (tifa_lite.diskspace)
    assert report.read_text(encoding="utf-8") == '{"conversations": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "report.json"]

"""`tifa-lite data roleplay` on the real shared corpora (English and Chinese)."""

from __future__ import annotations

import json

from tifa_lite.cli import main


def test_cli_sheldon_english(shared_data, tmp_path, capsys):
    texts = shared_data / "roleplay" / "Sheldon" / "texts"
    out = tmp_path / "sheldon.jsonl"
    report = tmp_path / "report.json"
    files = [str(texts / f"text_{i}.txt") for i in range(10)]
    assert main(["data", "roleplay", "--texts", *files, "--character", "Sheldon", "--out", str(out), "--report", str(report)]) == 0
    rows = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    stats = json.loads(report.read_text(encoding="utf-8"))
    assert len(rows) == stats["conversations"] > 20
    first = rows[0]["messages"]
    assert first[0]["role"] == "system" and "Sheldon" in first[0]["content"]  # system_prompt.txt found
    assert all([m["role"] for m in r["messages"]] == ["system", "user", "assistant"] for r in rows)
    assert "wrote" in capsys.readouterr().out


def test_cli_baizhantang_chinese_multi_turn(shared_data, tmp_path):
    texts = shared_data / "roleplay" / "baizhantang" / "texts"
    out = tmp_path / "bai.jsonl"
    assert main([
        "data", "roleplay", "--texts", str(texts), "--character", "白展堂", "--alias", "展堂",
        "--multi-turn", "--max-turns", "3", "--no-system-prompt", "--keep-source", "--out", str(out),
    ]) == 0
    rows = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert any(len(r["messages"]) == 6 for r in rows)
    assert all(r["messages"][0]["role"] == "user" for r in rows)
    assert rows[0]["source"].startswith(str(texts))
    assert any("葵花点穴手" in m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant")


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

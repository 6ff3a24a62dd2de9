"""The conversation rule: between two character lines → user turn; first appearance → N lines."""

from __future__ import annotations

import json

from tifa_lite.roleplay import convert, write_jsonl
from tifa_lite.roleplay.build import BuildReport, build_conversations
from tifa_lite.roleplay.parse import Line, ParseReport

SCENE = """'''Scene''':「A corridor at a sperm bank.」
Leonard:「One.」
Penny:「Two.」
Howard:「Three.」
Sheldon:「First.」
Sheldon:「Still first.」
Leonard:「Four.」
:「(Penny enters.)」
Penny:「Five.」
Sheldon:「Second.」
Leonard:「Six.」
Sheldon:「Third.」
"""


def scene_file(tmp_path, text=SCENE, name="text_0.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def turns(row):
    return [(m["role"], m["content"]) for m in row["messages"]]


def test_single_turn_pairs(tmp_path):
    rows, report = convert([scene_file(tmp_path)], "Sheldon", system_prompt=False, context_lines=2)
    assert [turns(r) for r in rows] == [
        # first appearance: only the previous 2 lines; consecutive character lines → one turn
        [("user", "Penny: Two.\nHoward: Three."), ("assistant", "First.\nStill first.")],
        # everything since the character last spoke, narration included
        [("user", "Leonard: Four.\n((Penny enters.))\nPenny: Five."), ("assistant", "Second.")],
        [("user", "Leonard: Six."), ("assistant", "Third.")],
    ]
    assert report.character_lines == 4 and report.pairs == 3 and report.turns == 3
    assert report.parse.narration == 2


def test_multi_turn_windows(tmp_path):
    rows, report = convert([scene_file(tmp_path)], "sheldon", system_prompt=False, multi_turn=True, max_turns=2)
    assert [len(r["messages"]) for r in rows] == [4, 2]
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert report.conversations == 2 and report.turns == 3


def test_system_prompt_found_beside_texts_and_explicit(tmp_path):
    texts = tmp_path / "Sheldon" / "texts"
    texts.mkdir(parents=True)
    scene_file(texts)
    (tmp_path / "Sheldon" / "system_prompt.txt").write_text("I want you to act like Sheldon.\n", encoding="utf-8")
    rows, _ = convert([texts], "Sheldon")
    assert rows[0]["messages"][0] == {"role": "system", "content": "I want you to act like Sheldon."}
    other = tmp_path / "other.txt"
    other.write_text("You are Sheldon Cooper.", encoding="utf-8")
    rows, _ = convert([texts], "Sheldon", system_prompt=other)
    assert rows[0]["messages"][0]["content"] == "You are Sheldon Cooper."
    rows, _ = convert([texts], "Sheldon", system_prompt=False)
    assert rows[0]["messages"][0]["role"] == "user"


def test_character_opening_a_scene_is_skipped_and_counted(tmp_path):
    rows, report = convert([scene_file(tmp_path, "Sheldon:「Hello.」\nPenny:「Hi.」\nSheldon:「Bye.」\n")], "Sheldon", system_prompt=False)
    assert [turns(r) for r in rows] == [[("user", "Penny: Hi."), ("assistant", "Bye.")]]
    assert report.skipped == {"nothing said before it in the scene": 1}


def test_context_never_crosses_files_and_duplicates_removed(tmp_path):
    a = scene_file(tmp_path, "Penny:「Hi.」\nSheldon:「Hello.」\n", "text_1.txt")
    b = scene_file(tmp_path, "Penny:「Hi.」\nSheldon:「Hello.」\n", "text_2.txt")
    c = scene_file(tmp_path, "Leonard:「Yo.」\n", "text_0.txt")
    rows, report = convert([c, a, b], "Sheldon", system_prompt=False)
    assert [turns(r) for r in rows] == [[("user", "Penny: Hi."), ("assistant", "Hello.")]]
    assert report.duplicates == 1


def test_aliases_and_max_user_lines():
    scene = [Line("A", str(i), f"f:{i}") for i in range(6)] + [Line("展堂", "嗯", "f:7")]
    report = BuildReport(parse=ParseReport(), character="白展堂")
    rows = build_conversations([scene], "白展堂", report, aliases=("展堂",), context_lines=5, max_user_lines=3)
    assert turns(rows[0]) == [("user", "A: 3\nA: 4\nA: 5"), ("assistant", "嗯")]


def test_report_and_jsonl_round_trip(tmp_path):
    rows, report = convert([scene_file(tmp_path, SCENE + "Sheldon:「cut off\n")], "Sheldon", system_prompt=False)
    text = report.format()
    assert "pairs: 3" in text and "1 × unclosed 「" in text and "text_0.txt:13" in text
    d = report.as_dict()
    assert d["assistant_chars"]["max"] == len("First.\nStill first.")
    out = write_jsonl(rows, tmp_path / "out" / "rp.jsonl")
    loaded = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert loaded == [{"messages": r["messages"]} for r in rows]


def test_unknown_character_reports_speakers(tmp_path):
    rows, report = convert([scene_file(tmp_path)], "Sheldn", system_prompt=False)
    assert rows == []
    assert "no line spoken by 'Sheldn' (did you mean 'Sheldon'?); most frequent speakers: Sheldon, Leonard, Penny" in report.format()

"""Each input form, markup, narration, and every broken-line reason the report counts."""

from __future__ import annotations

import pytest

from tifa_lite.errors import DataError
from tifa_lite.roleplay.parse import ParseReport, collect_files, parse_corpus, parse_line


def line(raw):
    report = ParseReport()
    return parse_line(raw, "f.txt:1", report), report


@pytest.mark.parametrize(
    "raw, speaker, text",
    [
        ("Sheldon:「There's no point.」", "Sheldon", "There's no point."),
        ("白展堂：「葵花点穴手！」", "白展堂", "葵花点穴手！"),  # full-width colon
        ("Penny: Okay.", "Penny", "Okay."),
        ("佟湘玉：额错了", "佟湘玉", "额错了"),
        ("Leonard: He said: no.", "Leonard", "He said: no."),  # colon inside the text
        ("[[Toby Loobenfeld|Toby]]:「Theater and physics.」", "Toby", "Theater and physics."),
        ("Leonard:「''(To Penny)'' A drink?」", "Leonard", "(To Penny) A drink?"),
    ],
)
def test_speaker_forms(raw, speaker, text):
    parsed, report = line(raw)
    assert (parsed.speaker, parsed.text) == (speaker, text)
    assert report.utterances == 1 and not report.dropped


@pytest.mark.parametrize(
    "raw, text",
    [
        ("'''Scene''':「''A corridor at a sperm bank. ''」", "A corridor at a sperm bank."),
        (":「''(Leonard leaves.)''」", "(Leonard leaves.)"),
        ('旁白:白展堂想"千万别放我走啊！"', '白展堂想"千万别放我走啊！"'),
        ("The lights go down.", "The lights go down."),  # no speaker at all
        ("[[Apartment 4A]], Leonard is attaching something to a lamp.", "Apartment 4A, Leonard is attaching something to a lamp."),
    ],
)
def test_narration_kept_as_context(raw, text):
    parsed, report = line(raw)
    assert parsed.speaker is None and parsed.text == text
    assert report.narration == 1


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("燕小六:「」", "empty text"),
        ("Sheldon:「''''」", "empty text"),
        ("Sheldon:「So if a photon is directed", "unclosed 「 (line cut off?)"),
    ],
)
def test_broken_lines_dropped_with_reason(raw, reason):
    parsed, report = line(raw)
    assert parsed is None
    assert report.dropped == {reason: 1}
    assert report.examples[reason] == [f"f.txt:1: {raw}"]


def test_blank_lines_and_bom_are_not_errors():
    assert line("   ")[0] is None and not line("   ")[1].dropped
    parsed, _ = line("\ufeffSheldon:「Hi.」")
    assert parsed.speaker == "Sheldon"


def test_csv_with_header_and_bad_rows(tmp_path):
    path = tmp_path / "scene.csv"
    path.write_text(
        'character,line\nLeonard,"Agreed, what\'s your point?"\nSheldon,There\'s no point.\nbroken row\nA,b,c\nSheldon,\n',
        encoding="utf-8",
    )
    scenes, report = parse_corpus([path])
    assert [(l.speaker, l.text) for l in scenes[0]] == [
        ("Leonard", "Agreed, what's your point?"), ("Sheldon", "There's no point.")
    ]
    assert report.dropped["CSV row with 1 columns (expected character,line)"] == 1
    assert report.dropped["CSV row with 3 columns (expected character,line)"] == 1
    assert report.dropped["empty text"] == 1
    assert report.examples["empty text"] == [f"{path}:6: Sheldon,"]


def test_tsv(tmp_path):
    path = tmp_path / "scene.tsv"
    path.write_text("Leonard\tHi\nSheldon\tHello.\n", encoding="utf-8")
    scenes, _ = parse_corpus([path])
    assert [l.speaker for l in scenes[0]] == ["Leonard", "Sheldon"]


def test_not_utf8_names_file_and_fix(tmp_path):
    path = tmp_path / "gbk.txt"
    path.write_bytes("白展堂:「葵花点穴手！」".encode("gbk"))
    with pytest.raises(DataError, match=r"gbk\.txt:1: not UTF-8.*GB18030.*iconv -f GB18030"):
        parse_corpus([path])


def test_collect_files_natural_order_and_missing(tmp_path):
    for n in (10, 2, 1):
        (tmp_path / f"text_{n}.txt").write_text("A: b\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("x", encoding="utf-8")
    assert [p.name for p in collect_files([tmp_path])] == ["text_1.txt", "text_2.txt", "text_10.txt"]
    with pytest.raises(DataError, match="no such file or folder"):
        collect_files([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt/.csv/.tsv files"):
        collect_files([tmp_path / "empty"])

"""Files that are not UTF-8 are refused at file:line with what to do; never decoded by guess."""

import json

import pytest

from tifa_lite.data.encoding import decode, read_text
from tifa_lite.data.io import SkipReport, iter_records
from tifa_lite.errors import DataError

CHINESE_ROW = {"messages": [{"role": "user", "content": "掌柜的，今天客栈里来了几个客人？"},
                            {"role": "assistant", "content": "葵花点穴手！"}]}


def test_gbk_jsonl_names_the_first_bad_line_and_the_encoding(tmp_path):
    path = tmp_path / "export.jsonl"
    ascii_row = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    path.write_bytes((ascii_row + "\n" + json.dumps(CHINESE_ROW, ensure_ascii=False) + "\n").encode("gbk"))
    with pytest.raises(DataError) as err:
        list(iter_records(str(path)))
    message = str(err.value)
    assert message.startswith(f"{path}:2: not UTF-8 (byte 0x")
    assert "looks like GB18030" in message and "iconv -f GB18030 -t UTF-8 export.jsonl > export.utf8.jsonl" in message


def test_binary_file_is_not_text(tmp_path):
    path = tmp_path / "weights.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(DataError, match=rf"{path}:1: not a text file \(it holds NUL bytes\)"):
        list(iter_records(str(path)))


def test_utf16_file_says_so(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([CHINESE_ROW], ensure_ascii=False), encoding="utf-16")
    with pytest.raises(DataError, match=rf"{path}:1: the file is UTF-16, not UTF-8.*iconv -f UTF-16"):
        list(iter_records(str(path)))


def test_cpt_text_is_read_with_the_same_check_never_with_replacement_characters(tmp_path):
    path = tmp_path / "novel.txt"
    path.write_bytes("第一章\n白展堂说：葵花点穴手！\n".encode("gb18030"))
    with pytest.raises(DataError, match=rf"{path}:1: not UTF-8.*GB18030"):
        list(iter_records(str(path)))
    path.write_text("第一章\n白展堂说。\n", encoding="utf-8-sig")  # a BOM is dropped, not kept as text
    assert [r.data for r in iter_records(str(path))] == ["第一章\n白展堂说。\n"]


def test_error_counts_lines_of_a_whole_file():
    raw = "line one\nline two\n".encode() + "第三行".encode("gbk")
    with pytest.raises(DataError, match=r"^f.txt:3: not UTF-8 \(byte 0x.. at column 1\)"):
        decode(raw, "f.txt")


@pytest.mark.parametrize("suffix, content", [(".jsonl", "\n  \n"), (".txt", "   \n"), (".json", ""), (".csv", "")])
def test_empty_file_says_it_is_empty(tmp_path, suffix, content):
    path = tmp_path / f"empty{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}: the file is empty \(no records\)\. .*leave it out of data.path"):
        list(iter_records(str(path)))


def test_empty_file_in_a_folder_is_skipped_and_counted_under_skip(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "a"}) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("", encoding="utf-8")
    skipped = SkipReport()
    rows = list(iter_records(str(tmp_path), on_error="skip", skipped=skipped))
    assert [r.data["text"] for r in rows] == ["a"] and skipped.counts == {"empty file": 1}


def test_file_of_only_bad_lines_is_not_called_empty(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n", encoding="utf-8")
    skipped = SkipReport()
    assert list(iter_records(str(path), on_error="skip", skipped=skipped)) == []
    assert skipped.counts == {"malformed JSON": 1}


def test_read_text_drops_the_bom(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("You are Sheldon.", encoding="utf-8-sig")
    assert read_text(path) == "You are Sheldon."


@pytest.mark.parametrize("text, encoding, expected", [
    ("你好！有什么可以帮你？", "gbk", "GB18030"),  # charset-normalizer alone: CP949
    ("안녕하세요, 오늘 날씨가 정말 좋네요.", "cp949", "CP949"),
    ("こんにちは、今日はいい天気ですね。", "cp932", "CP932"),
    ("你好，請問今天天氣怎麼樣？", "big5", "BIG5"),
])
def test_guess_prefers_the_code_page_whose_script_the_bytes_read_as(text, encoding, expected):
    from tifa_lite.data.encoding import guess_encoding

    assert guess_encoding(json.dumps({"content": text}, ensure_ascii=False).encode(encoding)) == expected


def test_script_share_counts_only_the_wide_characters():
    from tifa_lite.data.encoding import script_share

    assert script_share("abc 你好".encode("gb18030"), "gb18030", "chinese") == 1.0
    assert script_share("abc".encode(), "gb18030", "chinese") == 0.0
    assert script_share(b"\xff\xff", "cp949", "korean") == 0.0  # does not decode

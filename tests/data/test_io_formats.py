import json

import pytest

from tifa_lite.data.formats import detect_format, to_messages
from tifa_lite.data.io import SkipReport, expand_paths, iter_records
from tifa_lite.errors import DataError


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"text": "a"}', '{"text": "b"', '{"text": "c"}'])
    with pytest.raises(DataError, match=rf"{path}:2: malformed JSON.*data.on_error=skip"):
        list(iter_records(str(path)))


def test_skip_counts_bad_lines(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"text": "a"}', "not json", "[1, 2]", '{"text": "c"}'])
    skipped = SkipReport()
    rows = list(iter_records(str(path), on_error="skip", skipped=skipped))
    assert [r.data["text"] for r in rows] == ["a", "c"]
    assert [r.where for r in rows] == [f"{path}:1", f"{path}:4"]
    assert skipped.counts == {"malformed JSON": 1, "not an object": 1}


def test_missing_file_error_names_key(tmp_path):
    with pytest.raises(DataError, match=r"data.path: .*missing.jsonl does not exist"):
        expand_paths(str(tmp_path / "missing.jsonl"))


def test_folder_and_glob(tmp_path):
    write_lines(tmp_path / "a.jsonl", ['{"text": "a"}'])
    (tmp_path / "b.txt").write_text("novel", encoding="utf-8")
    assert [p.name for p in expand_paths(str(tmp_path))] == ["a.jsonl", "b.txt"]
    assert [p.name for p in expand_paths(str(tmp_path / "*.txt"))] == ["b.txt"]
    with pytest.raises(DataError, match="matches no file"):
        expand_paths(str(tmp_path / "*.csv"))


def test_json_array_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "x"}, {"text": "y"}]), encoding="utf-8")
    assert [r.where for r in iter_records(str(path))] == [f"{path}[0]", f"{path}[1]"]


@pytest.mark.parametrize(
    "row, fmt",
    [
        ({"messages": []}, "messages"),
        ({"conversations": []}, "sharegpt"),
        ({"conversation": []}, "xtuner"),
        ({"instruction": "i", "output": "o"}, "alpaca"),
        ({"text": "t"}, "text"),
    ],
)
def test_detect_format(row, fmt):
    assert detect_format(row, "f:1") == fmt


def test_detect_format_unknown_keys():
    with pytest.raises(DataError, match=r"f:3: cannot tell the data format"):
        detect_format({"foo": 1}, "f:3")


def test_sharegpt_and_alpaca_convert():
    share = {"system": "S", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    assert to_messages(share, "sharegpt", "f:1") == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
    ]
    alpaca = {"instruction": "Add", "input": "1+1", "output": "2", "history": [["q", "a"]]}
    assert to_messages(alpaca, "alpaca", "f:1") == [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
        {"role": "user", "content": "Add\n\n1+1"}, {"role": "assistant", "content": "2"},
    ]


def test_system_prompt_added_when_missing():
    rows = to_messages({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                       "messages", "f:1", system_prompt="SYS")
    assert rows[0] == {"role": "system", "content": "SYS"}


@pytest.mark.parametrize(
    "messages, problem",
    [
        ([], "empty conversation"),
        ([{"role": "user", "content": "a"}], "no assistant message"),
        ([{"role": "human", "content": "a"}, {"role": "assistant", "content": "b"}], "role 'human'"),
        ([{"role": "user", "content": ""}, {"role": "assistant", "content": "b"}], "empty or non-text"),
        ([{"role": "assistant", "content": "b"}], "must be from the user"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
         "consecutive"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "c"}],
         "only the first message may be system"),
    ],
)
def test_bad_conversations_name_the_record(messages, problem):
    with pytest.raises(DataError, match=rf"data.jsonl:7: .*{problem}"):
        to_messages({"messages": messages}, "messages", "data.jsonl:7")

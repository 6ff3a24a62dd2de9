"""Bad data files, through `tifa-lite train`: refused before the model loads, at file:line,
with what the file looks like and how to fix it; and the common shapes that are right
(text-part content, Chinese code pages) read as they should."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.bad_input.conftest import assert_refused, conversation, leftovers

CHINESE_ROWS = [("你好", "你好！有什么可以帮你？"), ("今天星期几", "今天星期三。"), ("讲个笑话", "好的，从前有座山，山上有座庙。")]


def jsonl(rows) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


@pytest.fixture
def refused_train(cli, train_args, tmp_path):
    """``refused_train(path, *names)``: train on ``path`` is refused naming ``names``; nothing is left."""

    def check(path, *names, **overrides):
        outcome = cli(*train_args(path, **overrides))
        assert_refused(outcome, *names)
        assert "model loaded" not in outcome.err
        assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
        assert leftovers(tmp_path) == []
        return outcome

    return check


def iconv_round_trip(command: str, folder) -> str:
    """Run the suggested ``iconv -f X -t UTF-8 in > out`` in ``folder``; the converted text."""
    assert shutil.which("iconv"), "iconv is part of glibc; the check needs it"
    subprocess.run(command, shell=True, cwd=folder, check=True)
    target = command.rsplit(">", 1)[1].strip()
    return (folder / target).read_text(encoding="utf-8")


def suggested_command(err: str) -> str:
    return err.split("Convert it first: ", 1)[1].strip().splitlines()[0]


def test_gbk_chat_log_is_detected_as_gb18030_and_the_advice_converts_it(refused_train, tmp_path):
    """A Windows export of Chinese chat logs (GBK): charset-normalizer alone calls the first
    line CP949, and `iconv -f CP949` turns the Chinese into wrong characters."""
    rows = [conversation(u, a) for u, a in CHINESE_ROWS]
    path = tmp_path / "chats.jsonl"
    path.write_bytes(jsonl(rows).encode("gbk"))
    outcome = refused_train(path, f"{path}:1", "not UTF-8", "GB18030", "iconv -f GB18030 -t UTF-8 chats.jsonl")
    converted = iconv_round_trip(suggested_command(outcome.err), tmp_path)
    assert [json.loads(line) for line in converted.splitlines()] == rows


@pytest.mark.parametrize("encoding, named, user, assistant", [
    ("cp949", "CP949", "안녕하세요, 오늘 날씨가 정말 좋네요.", "네, 산책하기 좋은 날이에요."),  # Korean keeps its own
    ("big5", "BIG5", "你好，請問今天天氣怎麼樣？", "今天天氣晴朗，適合出門散步。"),
])
def test_other_cjk_code_pages_get_advice_that_converts_them(refused_train, tmp_path, encoding, named, user, assistant):
    rows = [conversation(user, assistant)]
    path = tmp_path / f"{encoding}.jsonl"
    path.write_bytes(jsonl(rows).encode(encoding))
    outcome = refused_train(path, f"{path}:1", named)
    assert [json.loads(line) for line in iconv_round_trip(suggested_command(outcome.err), tmp_path).splitlines()] == rows


def test_gbk_on_a_later_line_is_reported_at_that_line(refused_train, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(jsonl([conversation()]).encode() + jsonl([conversation(*CHINESE_ROWS[1])]).encode("gbk"))
    refused_train(path, f"{path}:2", "GB18030")


def test_utf16_file(refused_train, tmp_path):
    path = tmp_path / "u16.jsonl"
    path.write_bytes(jsonl([conversation()]).encode("utf-16"))
    refused_train(path, f"{path}:1", "UTF-16", "iconv -f UTF-16")


def test_binary_file(refused_train, tmp_path):
    path = tmp_path / "model.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01")
    refused_train(path, f"{path}:1", "not a text file", "must be UTF-8 text")


def test_json_array_saved_as_jsonl(refused_train, tmp_path):
    rows = [conversation(), conversation("Bye", "Goodbye!")]
    path = tmp_path / "export.jsonl"
    path.write_text(json.dumps(rows))
    refused_train(path, f"{path}:1", "one JSON array of 2 records", "Rename it to export.json")
    # The advice works: renamed, the same file is read as its records.
    from tifa_lite.data.io import iter_records

    renamed = path.rename(path.with_suffix(".json"))
    assert [r.data for r in iter_records(str(renamed))] == rows


def test_pretty_printed_array_saved_as_jsonl(refused_train, tmp_path):
    path = tmp_path / "pretty.jsonl"
    path.write_text(json.dumps([conversation()], indent=2))
    refused_train(path, f"{path}:1", "an array of 1 records written over several lines", "Rename it to pretty.json")


def test_line_that_is_a_json_string(refused_train, tmp_path):
    path = tmp_path / "twice.jsonl"
    path.write_text(json.dumps(json.dumps(conversation())) + "\n")
    refused_train(path, f"{path}:1", "got a JSON string", "JSON-encoded twice", "json.dumps(record) once")


def test_line_that_is_a_number(refused_train, tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text(jsonl([conversation()]) + "42\n")
    refused_train(path, f"{path}:2", "got a number", 'must be one object, e.g. {"messages"')


def test_malformed_json_line(refused_train, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(jsonl([conversation(), conversation()]) + '{"messages": [\n')
    refused_train(path, f"{path}:3", "malformed JSON", "Fix the line, or set data.on_error=skip")


def test_empty_file(refused_train, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    refused_train(path, f"{path}: the file is empty", "Fill it, or leave it out of data.path")


def test_missing_file(refused_train, tmp_path):
    refused_train(tmp_path / "nowhere.jsonl", "data.path", "does not exist", "Point data.path at")


def test_glob_matching_nothing(refused_train, tmp_path):
    refused_train(str(tmp_path / "*.jsonl"), "data.path", "matches no file")


def test_unknown_record_format(refused_train, tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text(jsonl([{"q": "hi", "a": "hello"}]))
    refused_train(path, f"{path}:1", "cannot tell the data format from keys ['a', 'q']", "set data.format")


def test_unknown_role(refused_train, tmp_path):
    path = tmp_path / "roles.jsonl"
    path.write_text(jsonl([{"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]))
    refused_train(path, f"{path}:1", "role 'human'", "expected one of system, user, assistant")


def test_no_assistant_turn(refused_train, tmp_path):
    path = tmp_path / "mute.jsonl"
    path.write_text(jsonl([{"messages": [{"role": "user", "content": "hi"}]}]))
    refused_train(path, f"{path}:1", "no assistant message", "data.on_error=skip")


def test_two_user_turns_in_a_row(refused_train, tmp_path):
    path = tmp_path / "double.jsonl"
    msgs = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    path.write_text(jsonl([{"messages": msgs}]))
    refused_train(path, f"{path}:1", "two consecutive 'user' messages", "must alternate")


def test_image_part_is_refused_by_name(refused_train, tmp_path):
    path = tmp_path / "vision.jsonl"
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "x.png"}}]
    path.write_text(jsonl([{"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "A cat."}]}]))
    refused_train(path, f"{path}:1", "message 0 content[1] is a 'image_url' part", "Remove the part")


def test_text_parts_content_is_accepted_and_joined(tmp_path):
    """OpenAI's list-of-parts content (exported chats) reads as the parts' text."""
    from tifa_lite.config import load_recipe
    from tifa_lite.data.build import load_conversations
    from tifa_lite.data.io import SkipReport
    from tests.bad_input.conftest import RECIPE

    path = tmp_path / "parts.jsonl"
    parts = [{"type": "text", "text": "First line."}, {"type": "text", "text": "Second line."}]
    path.write_text(jsonl([{"messages": [{"role": "user", "content": parts},
                                         {"role": "assistant", "content": [{"type": "text", "text": "Got both."}]}]}]))
    config = load_recipe(RECIPE, {"data.path": str(path), "data.system_prompt": None})
    [(messages, where)] = load_conversations(config, str(path), SkipReport())
    assert where == f"{path}:1"
    assert [m["content"] for m in messages if m["role"] != "system"] == ["First line.\nSecond line.", "Got both."]


def test_on_error_skip_reads_past_a_bad_line_to_the_model_load(cli, train_args, tmp_path, monkeypatch):
    """The other side of the advice: data.on_error=skip reads the good rows (the model load is
    then reached, and stopped here)."""
    from tifa_lite import backends
    from tifa_lite.errors import TifaError

    class ModelLoadReached(TifaError):
        pass

    def stop(*args, **kwargs):
        raise ModelLoadReached("model load reached")

    monkeypatch.setattr(backends, "load_for_training_with_backend", stop)
    path = tmp_path / "some_bad.jsonl"
    path.write_text(jsonl([conversation()] * 3) + "{oops\n")
    outcome = cli(*train_args(path, data__on_error="skip"))
    assert_refused(outcome, "model load reached")
    assert leftovers(tmp_path) == [] and not (tmp_path / "run.partial").exists()


def test_hh_rlhf_strings_without_the_assistant_marker(cli, train_args, tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text(jsonl([{"chosen": "Human: hi\nAssistant: hello", "rejected": "Human: hi\nAssistant: go away"}]))
    outcome = cli(*train_args(path, train__method="dpo"))
    assert_refused(outcome, f"{path}:1", "no '\\n\\nAssistant:' marker", "'Assistant:' without the blank line",
                   "Add the marker")


def test_preference_row_without_rejected(cli, train_args, tmp_path):
    path = tmp_path / "half.jsonl"
    path.write_text(jsonl([{"prompt": "hi", "chosen": "hello"}]))
    outcome = cli(*train_args(path, train__method="dpo"))
    assert_refused(outcome, f"{path}:1", "missing ['rejected']", "data.on_error=skip")


def test_preference_pair_with_identical_answers(cli, train_args, tmp_path):
    path = tmp_path / "same.jsonl"
    path.write_text(jsonl([{"prompt": "hi", "chosen": "hello", "rejected": "hello"}]))
    outcome = cli(*train_args(path, train__method="dpo"))
    assert_refused(outcome, f"{path}:1", "identical", "Fix or remove it")

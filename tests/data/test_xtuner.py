"""xtuner's `conversation` records ↔ canonical messages, and file:line errors."""

from __future__ import annotations

import json

import pytest

from tifa_lite.data.formats import detect_format, to_messages
from tifa_lite.data.io import iter_records
from tifa_lite.data.xtuner import messages_to_xtuner, text_to_xtuner, xtuner_to_messages
from tifa_lite.errors import DataError

# The shape of xtuner's docs example and of the InternLM role-play tutorials' data.
MULTI_TURN = {
    "conversation": [
        {"system": "You are Sheldon Cooper.", "input": "Hi Sheldon.", "output": "Bazinga."},
        {"input": "Where do you sit?", "output": "In my spot."},
    ]
}


def test_multi_turn_with_system():
    assert xtuner_to_messages(MULTI_TURN, "f.jsonl:1") == [
        {"role": "system", "content": "You are Sheldon Cooper."},
        {"role": "user", "content": "Hi Sheldon."},
        {"role": "assistant", "content": "Bazinga."},
        {"role": "user", "content": "Where do you sit?"},
        {"role": "assistant", "content": "In my spot."},
    ]


def test_single_turn_without_system_and_empty_system_string():
    record = {"conversation": [{"system": "", "input": "2+2?", "output": "4"}]}
    assert xtuner_to_messages(record, "x") == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]


def test_repeated_identical_system_is_accepted_once():
    record = {"conversation": [
        {"system": "S", "input": "a", "output": "b"},
        {"system": "S", "input": "c", "output": "d"},
    ]}
    assert [m["role"] for m in xtuner_to_messages(record, "x")] == ["system", "user", "assistant", "user", "assistant"]


def test_round_trip():
    messages = xtuner_to_messages(MULTI_TURN, "x")
    assert messages_to_xtuner(messages) == MULTI_TURN
    assert xtuner_to_messages(messages_to_xtuner(messages), "x") == messages


@pytest.mark.parametrize(
    "record, needle",
    [
        ({"conversation": []}, "non-empty 'conversation'"),
        ({"conversations": [{"input": "a", "output": "b"}]}, "non-empty 'conversation'"),
        ({"conversation": ["hello"]}, "conversation[0] must be an object"),
        ({"conversation": [{"input": "a"}]}, "conversation[0] has no 'output'"),
        ({"conversation": [{"input": "a", "output": "  "}]}, "empty 'output'"),
        ({"conversation": [{"input": "a", "output": 3}]}, "'output' must be text"),
        ({"conversation": [{"input": "a", "output": "b"}, {"input": "", "output": "c"}]},
         "conversation[1] has an empty 'input'"),
        ({"conversation": [{"input": "a", "output": "b", "answer": "c"}]}, "unknown key(s) ['answer']"),
        ({"conversation": [{"system": "A", "input": "a", "output": "b"},
                           {"system": "B", "input": "c", "output": "d"}]}, "different 'system'"),
    ],
)
def test_malformed_records_name_the_place(record, needle):
    with pytest.raises(DataError) as info:
        xtuner_to_messages(record, "data/rp.jsonl:7")
    assert str(info.value).startswith("data/rp.jsonl:7")
    assert needle in str(info.value)


def test_incremental_pretraining_form_points_to_cpt():
    with pytest.raises(DataError, match="train.method=cpt"):
        xtuner_to_messages(text_to_xtuner("Once upon a time."), "novel.jsonl:1")


def test_output_with_loss_false_is_warned_not_silently_dropped(caplog):
    import tifa_lite.data.xtuner as xt

    xt._warned_output_with_loss = False
    record = {"conversation": [{"input": "a", "output": "b", "output_with_loss": False},
                               {"input": "c", "output": "d"}]}
    assert len(xtuner_to_messages(record, "f:1")) == 4
    assert "output_with_loss=false" in caplog.text


def test_messages_to_xtuner_rejects_broken_alternation():
    with pytest.raises(DataError, match="alternation"):
        messages_to_xtuner([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "r:3")
    with pytest.raises(DataError, match="end with an assistant"):
        messages_to_xtuner([{"role": "user", "content": "a"}], "r:3")


def test_jsonl_and_json_list_through_the_data_reader(tmp_path):
    """The lead's reader (io + formats) dispatches data.format=xtuner here, with file:line."""
    jsonl = tmp_path / "rp.jsonl"
    jsonl.write_text(json.dumps(MULTI_TURN) + "\n" + json.dumps({"conversation": [{"input": "x"}]}) + "\n",
                     encoding="utf-8")
    records = list(iter_records(str(jsonl)))
    assert detect_format(records[0].data, records[0].where) == "xtuner"
    assert len(to_messages(records[0].data, "xtuner", records[0].where)) == 5
    with pytest.raises(DataError, match=rf"{jsonl}:2: conversation\[0\] has no 'output'"):
        to_messages(records[1].data, "xtuner", records[1].where)

    # xtuner's own docs use one JSON list per file.
    as_list = tmp_path / "rp.json"
    as_list.write_text(json.dumps([MULTI_TURN, MULTI_TURN], ensure_ascii=False), encoding="utf-8")
    rows = list(iter_records(str(as_list)))
    assert [len(to_messages(r.data, "xtuner", r.where)) for r in rows] == [5, 5]

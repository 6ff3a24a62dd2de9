"""The data formats users bring, under the shipped SFT recipe as it stands: ShareGPT, Alpaca,
plain messages, CSV/TSV, Parquet and gzip-compressed JSON Lines are read; a record of
another format than an explicit ``data.format`` is named, with the setting that reads it."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from tests.bad_input.conftest import RECIPE, assert_refused, conversation
from tifa_lite.config import load_recipe
from tifa_lite.data.build import load_conversations
from tifa_lite.data.io import SkipReport
from tifa_lite.errors import DataError

EXPECTED = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}]
SHAREGPT = {"conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello! How can I help?"}]}
ALPACA = {"instruction": "Hi there", "input": "", "output": "Hello! How can I help?"}


def read(path, **data) -> list[list[dict]]:
    """The conversations the shipped recipe reads from ``path`` (no tokenizer, no model)."""
    config = load_recipe(RECIPE, {"data.path": str(path), "data.system_prompt": None,
                                  **{f"data.{k}": v for k, v in data.items()}})
    return [messages for messages, _ in load_conversations(config, config.data.path, SkipReport())]


def write_jsonl(path, rows, opener=open):
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def write_table(path, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ALPACA), delimiter=delimiter)
        writer.writeheader()
        writer.writerows([ALPACA, ALPACA])
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_the_shipped_recipe_reads_by_keys():
    assert load_recipe(RECIPE).data.format == "auto"


@pytest.mark.parametrize("rows", [[SHAREGPT], [ALPACA], [conversation()]], ids=["sharegpt", "alpaca", "messages"])
def test_jsonl_formats_are_read(tmp_path, rows):
    assert read(write_jsonl(tmp_path / "data.jsonl", rows * 2)) == [EXPECTED, EXPECTED]


def test_sharegpt_turns_with_role_and_content(tmp_path):
    row = {"conversations": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}]}
    assert read(write_jsonl(tmp_path / "data.jsonl", [row])) == [EXPECTED]


@pytest.mark.parametrize("name, delimiter", [("data.csv", ","), ("data.tsv", "\t")])
def test_csv_and_tsv_are_read(tmp_path, name, delimiter):
    assert read(write_table(tmp_path / name, delimiter)) == [EXPECTED, EXPECTED]


def test_parquet_and_gzip_json_lines_are_read_alone_and_from_a_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    parquet = write_parquet(folder / "a.parquet", [SHAREGPT, SHAREGPT])
    gz = write_jsonl(folder / "b.jsonl.gz", [ALPACA], opener=gzip.open)
    assert read(parquet) == [EXPECTED, EXPECTED]
    assert read(gz) == [EXPECTED]
    assert len(read(folder, shuffle=False)) == 3


def test_explicit_format_names_the_format_the_record_is_in(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [SHAREGPT])
    with pytest.raises(DataError) as info:
        read(path, format="messages")
    message = str(info.value)
    assert f"{path}:1: data.format=messages, but this record is ShareGPT" in message
    assert "set data.format=sharegpt, or data.format=auto" in message


def test_csv_under_format_messages_is_named_too(tmp_path):
    with pytest.raises(DataError, match="this record is Alpaca .instruction/input/output.*set data.format=alpaca"):
        read(write_table(tmp_path / "data.csv"), format="messages")


@pytest.mark.parametrize("kind", ["parquet", "gzip"])
def test_a_binary_file_under_the_wrong_name_says_what_it_is(cli, train_args, tmp_path, kind):
    path = tmp_path / "data.jsonl"
    if kind == "parquet":
        write_parquet(path, [conversation()])
        expected = "a Parquet file named data.jsonl: name it data.parquet"
    else:
        write_jsonl(path, [conversation()], opener=gzip.open)
        expected = "a gzip-compressed file named data.jsonl: name it data.jsonl.gz"
    assert_refused(cli(*train_args(path)), f"{path}:1: {expected}")


def test_a_cut_short_gzip_file_is_refused_by_name(cli, train_args, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl.gz", [conversation()] * 50, opener=gzip.open)
    path.write_bytes(path.read_bytes()[:40])
    assert_refused(cli(*train_args(path)), f"{path}: not a readable gzip file")

"""SFT data: the <think> history policy acts on the shipped-style recipes (tokenizer's own
template, think_policy auto) and says what it removed."""

import json
import logging

import pytest
from transformers import AutoTokenizer

from tifa_lite.config import load_recipe
from tifa_lite.data.build import build_sft_data
from tifa_lite.errors import DataError

CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "<think>\nr1\n</think>\na1"},
    {"role": "user", "content": "q2"},
    {"role": "assistant", "content": "<think>\nr2\n</think>\na2"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def built_text(tmp_path, tokenizer, **model):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATION}) + "\n", encoding="utf-8")
    config = load_recipe({"model": {"chat_template": None, **model}, "data": {"path": str(path), "format": "messages"}})
    [sample] = build_sft_data(config, tokenizer).train
    return tokenizer.decode(sample["input_ids"])


def test_default_strips_earlier_reasoning_and_logs_it(tmp_path, tokenizer, caplog):
    with caplog.at_level(logging.INFO, logger="tifa_lite.conversation.templates"):
        text = built_text(tmp_path, tokenizer)
    assert "r1" not in text and "<|im_start|>assistant\na1<|im_end|>" in text
    assert "<think>\nr2\n</think>\na2" in text  # the trained answer keeps its reasoning
    assert "data.path: model.think_policy=auto removed <think>…</think> from earlier assistant turns in 1 of 1" in caplog.text


def test_keep_leaves_history(tmp_path, tokenizer):
    assert "<think>\nr1\n</think>\na1" in built_text(tmp_path, tokenizer, think_policy="keep")


def test_ziya_with_a_system_turn_names_the_record(tmp_path, tokenizer):
    with pytest.raises(DataError, match=r"sft\.jsonl:1: a system message, but the ziya template has no system turn"):
        built_text(tmp_path, tokenizer, chat_template="ziya")

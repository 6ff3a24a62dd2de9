"""GSM8K / prompt-only data for GRPO."""

import json

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.data.gsm8k import R1_ZERO_SYSTEM_PROMPT, build_grpo_data, final_answer, load_prompt_rows
from tifa_lite.errors import DataError


@pytest.fixture(scope="module")
def tokenizer(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def config(**data):
    return load_recipe({"train": {"method": "grpo"}, "data": data})


def test_final_answer_is_the_write_ups_extraction():
    assert final_answer("48/2 = 24\n#### 72", "f:1") == "72"
    # answer.split("####")[1].strip(): the exact correctness reward compares this string.
    assert final_answer("... #### 1,000", "f:1") == "1,000"
    with pytest.raises(DataError, match="f:3: GSM8K 'answer' has no '#### <number>'"):
        final_answer("the answer is 5", "f:3")


def test_gsm8k_sample_rows(sample_data):
    cfg = config(path=str(sample_data / "gsm8k_sample.jsonl"), format="gsm8k")
    rows = load_prompt_rows(cfg, cfg.data.path, limit=3)
    assert len(rows) == 3
    assert rows[0]["answer"] == "72"
    system, user = rows[0]["prompt"]
    assert system == {"role": "system", "content": R1_ZERO_SYSTEM_PROMPT}
    assert user["role"] == "user" and user["content"].startswith("Natalia sold clips")


@pytest.mark.integration
def test_every_shared_gsm8k_row_has_a_final_answer(shared_data):
    cfg = config(path=str(shared_data / "gsm8k" / "train.jsonl"), format="gsm8k")
    rows = load_prompt_rows(cfg, cfg.data.path)
    assert len(rows) == 7473
    assert all(r["answer"] and r["prompt"][-1]["role"] == "user" for r in rows)


def test_system_prompt_and_template_choices(tmp_path):
    f = write(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
    rows = load_prompt_rows(config(path=str(f), system_prompt="", prompt_template="Q: {question}"), str(f))
    assert rows[0]["prompt"] == [{"role": "user", "content": "Q: 1+1?"}]


def test_auto_format_and_prompt_rows(tmp_path):
    f = write(tmp_path / "p.jsonl", [
        {"question": "2+2?", "answer": "#### 4"},
        {"prompt": "Say hi", "target": "hi"},
        {"prompt": [{"role": "user", "content": "Say bye"}], "target": "bye"},
    ])
    rows = load_prompt_rows(config(path=str(f), system_prompt="S"), str(f))
    assert rows[0]["answer"] == "4"
    assert rows[1] == {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Say hi"}], "target": "hi"}
    assert rows[2]["prompt"][0]["content"] == "S" and rows[2]["target"] == "bye"


def test_bad_rows_name_file_and_line(tmp_path):
    f = write(tmp_path / "bad.jsonl", [{"question": "q", "answer": "#### 1"}, {"question": "q", "answer": "no marker"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: GSM8K 'answer' has no"):
        load_prompt_rows(config(path=str(f)), str(f))
    f2 = write(tmp_path / "odd.jsonl", [{"text": "hello"}])
    with pytest.raises(DataError, match=r"odd\.jsonl:1: cannot tell the format"):
        load_prompt_rows(config(path=str(f2)), str(f2))
    f3 = write(tmp_path / "broken.jsonl", ['{"question": "q", "answer": "#### 1"}', "{not json"])
    with pytest.raises(DataError, match=r"broken\.jsonl:2: malformed JSON"):
        load_prompt_rows(config(path=str(f3)), str(f3))


def test_on_error_skip(tmp_path):
    f = write(tmp_path / "mixed.jsonl", [{"question": "q", "answer": "#### 1"}, {"question": "q", "answer": "none"}, "{oops"])
    rows = load_prompt_rows(config(path=str(f), on_error="skip"), str(f))
    assert [r["answer"] for r in rows] == ["1"]


def test_wrong_format_for_grpo(tmp_path):
    f = write(tmp_path / "t.jsonl", [{"text": "a novel"}])
    with pytest.raises(DataError, match="GRPO reads data.format=gsm8k, prompt or a conversation format"):
        load_prompt_rows(config(path=str(f), format="text"), str(f))


def test_conversations_become_prompts_up_to_the_last_reply(tmp_path, sample_data):
    """Role-play conversations: their own system turn, no R1-Zero default; the last reply is the reference."""
    path = sample_data / "roleplay_sheldon_sample.jsonl"
    rows = load_prompt_rows(config(path=str(path)), str(path), limit=3)
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])["messages"]
    assert rows[0]["prompt"] == first[:-1] and rows[0]["reference"] == first[-1]["content"]
    assert all(r["prompt"][0]["content"] != R1_ZERO_SYSTEM_PROMPT for r in rows)
    assert all(r["prompt"][-1]["role"] == "user" for r in rows)
    f = write(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "Hello?"}]}])
    with pytest.raises(DataError, match="no assistant message"):
        load_prompt_rows(config(path=str(f)), str(f))


def test_build_drops_overlength_and_splits(tmp_path, tokenizer):
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"#### {2 * i}"} for i in range(20)]
    rows.append({"question": "word " * 400, "answer": "#### 1"})
    f = write(tmp_path / "g.jsonl", rows)
    cfg = load_recipe({"train": {"method": "grpo"}, "grpo": {"max_prompt_length": 128},
                       "data": {"path": str(f), "eval_ratio": 0.2}})
    data = build_grpo_data(cfg, tokenizer)
    assert data.report["dropped_overlength_prompts"] == 1
    assert data.report["train_rows"] + data.report["eval_rows"] == 20
    assert data.eval is not None and len(data.eval) == data.report["eval_rows"] == 4
    assert set(data.train.column_names) == {"prompt", "answer"}


def test_build_with_nothing_left(tmp_path, tokenizer):
    f = write(tmp_path / "g.jsonl", [{"question": "word " * 400, "answer": "#### 1"}])
    cfg = load_recipe({"train": {"method": "grpo"}, "grpo": {"max_prompt_length": 64}, "data": {"path": str(f)}})
    with pytest.raises(DataError, match="no usable prompt left"):
        build_grpo_data(cfg, tokenizer)


def test_hub_id_gets_gsm8k_config(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, *args, split=None):
        calls.append((name, args, split))
        return [{"question": "hub q", "answer": "x #### 3"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = config(path="openai/gsm8k", split="test")
    rows = load_prompt_rows(cfg, cfg.data.path)
    assert calls == [("openai/gsm8k", ("main",), "test")]
    assert rows[0]["answer"] == "3"
    cfg = config(path="someone/math:cfg2", source="hf")
    load_prompt_rows(cfg, cfg.data.path)
    assert calls[-1] == ("someone/math", ("cfg2",), "train")


def test_modelscope_id(monkeypatch):
    import sys
    import types

    calls = []

    class MsDataset:
        @staticmethod
        def load(name, subset_name=None, split=None):
            calls.append((name, subset_name, split))
            return [{"question": "ms q", "answer": "#### 9"}]

    pkg, sub = types.ModuleType("modelscope"), types.ModuleType("modelscope.msdatasets")
    sub.MsDataset = MsDataset
    monkeypatch.setitem(sys.modules, "modelscope", pkg)
    monkeypatch.setitem(sys.modules, "modelscope.msdatasets", sub)
    cfg = config(path="modelscope/gsm8k", source="modelscope")
    rows = load_prompt_rows(cfg, cfg.data.path)
    assert calls == [("modelscope/gsm8k", "main", "train")] and rows[0]["answer"] == "9"


def test_modelscope_missing_package_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "modelscope", None)
    monkeypatch.setitem(sys.modules, "modelscope.msdatasets", None)
    cfg = config(path="modelscope/gsm8k", source="modelscope")
    with pytest.raises(DataError, match="pip install modelscope"):
        load_prompt_rows(cfg, cfg.data.path)


def test_multi_turn_prompt_history_loses_its_reasoning(tmp_path, caplog):
    import logging

    turns = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "<think>one and one</think>2"},
             {"role": "user", "content": "and 2+2?"}]
    f = write(tmp_path / "p.jsonl", [{"prompt": turns, "answer": "4"}])
    with caplog.at_level(logging.INFO, logger="tifa_lite.conversation.templates"):
        [row] = load_prompt_rows(config(path=str(f), system_prompt=""), str(f))
    assert row["prompt"][1] == {"role": "assistant", "content": "2"}
    assert "in 1 of 1 conversations" in caplog.text
    cfg = load_recipe({"train": {"method": "grpo"}, "model": {"think_policy": "keep"},
                       "data": {"path": str(f), "system_prompt": ""}})
    assert load_prompt_rows(cfg, str(f))[0]["prompt"] == turns

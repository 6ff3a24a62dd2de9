import json

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.config.schema import ModelConfig
from tifa_lite.data.preference import (
    PairError, load_preference_splits, normalize_pair, parse_hh, read_preference_pairs, split_shared_prefix,
)
from tifa_lite.errors import ConfigError, DataError

HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, yeast."
HH_REJECTED = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: No idea."


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_parse_hh_turns():
    assert parse_hh(HH_CHOSEN) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Mix flour, water, yeast."},
    ]


def test_hh_pair_shared_prefix_becomes_prompt():
    pair = normalize_pair({"chosen": HH_CHOSEN, "rejected": HH_REJECTED})
    assert [m["content"] for m in pair["prompt"]] == ["Hi there", "Hello!", "How do I bake bread?"]
    assert pair["prompt"][-1]["role"] == "user"
    assert pair["chosen"] == [{"role": "assistant", "content": "Mix flour, water, yeast."}]
    assert pair["rejected"] == [{"role": "assistant", "content": "No idea."}]


def test_trl_forms_pass_through():
    plain = normalize_pair({"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5"})
    assert plain == {"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5"}
    conv = {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
        "chosen_score": 0.1,
    }
    assert normalize_pair(conv) == {k: conv[k] for k in ("prompt", "chosen", "rejected")}
    implicit = normalize_pair({"chosen": conv["prompt"] + conv["chosen"], "rejected": conv["prompt"] + conv["rejected"]})
    assert implicit["prompt"] == conv["prompt"] and implicit["chosen"] == conv["chosen"]


def test_system_prompt_prepended_to_conversational_prompt():
    pair = normalize_pair({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, system_prompt="Be kind.")
    assert pair["prompt"][0] == {"role": "system", "content": "Be kind."}


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"chosen": HH_CHOSEN, "rejected": HH_CHOSEN}, "identical"),
        ({"chosen": HH_CHOSEN, "rejected": HH_CHOSEN.rsplit("Assistant:", 1)[0] + "Assistant:"}, "empty"),
        ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}, "no shared prefix"),
        ({"prompt": "q", "chosen": "same", "rejected": "same "}, "identical"),
        ({"prompt": "q", "chosen": "", "rejected": "x"}, "empty"),
        ({"prompt": "q", "chosen": "x"}, "missing keys"),
    ],
)
def test_bad_pairs_are_named(row, reason):
    with pytest.raises(PairError) as err:
        normalize_pair(row)
    assert err.value.reason == reason


def test_divergence_at_user_turn_is_not_a_pair():
    a = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "z"}]
    b = a[:2] + [{"role": "user", "content": "other"}]
    with pytest.raises(PairError, match="diverge"):
        split_shared_prefix(a, b)


def test_bad_pair_raises_with_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
        {"chosen": HH_CHOSEN, "rejected": HH_CHOSEN},
    ])
    with pytest.raises(DataError, match=r"p\.jsonl:2: bad preference pair \(chosen and rejected are identical\)"):
        read_preference_pairs(str(path))


def test_bad_pairs_skipped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
        {"chosen": HH_CHOSEN, "rejected": HH_CHOSEN},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"},
    ])
    with (tmp_path / "p.jsonl").open("a") as fh:
        fh.write("{not json\n")
    data = read_preference_pairs(str(path), on_error="skip")
    assert len(data.rows) == 1
    assert data.skipped.counts == {"identical": 1, "no shared prefix": 1, "malformed JSON": 1}
    assert any("p.jsonl:3" in e for e in data.skipped.examples)


def test_mixed_plain_and_conversational_rejected(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
        {"prompt": "q", "chosen": "a", "rejected": "b"},
    ])
    with pytest.raises(DataError, match="p.jsonl:2: mixes plain-text and conversational"):
        read_preference_pairs(str(path))


@pytest.mark.integration
def test_shared_hh_file_parses_and_skips_only_empty_pairs(shared_data):
    data = read_preference_pairs(str(shared_data / "hh_rlhf" / "harmless_base_pairs.jsonl"), on_error="skip")
    assert len(data.rows) + data.skipped.total == 2000
    assert set(data.skipped.counts) == {"empty"}
    assert all(p["prompt"][-1]["role"] == "user" and p["chosen"][0]["role"] == "assistant" for p in data.rows)


def test_splits_limit_eval_and_overlength(sample_data, embedded_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = load_recipe("recipes/dpo_qlora_hh.yaml", {
        "data.path": str(sample_data / "hh_rlhf_sample.jsonl"), "data.eval_ratio": 0.25,
        "data.max_length": 96, "data.overlength": "drop",
    })
    train, evaluation, report = load_preference_splits(config, tokenizer)
    assert report["train_pairs"] == len(train) and report["eval_pairs"] == len(evaluation)
    assert len(train) + len(evaluation) + report["dropped_overlength"] + report["dropped_overlength_eval"] == 40
    assert report["dropped_overlength"] > 0
    for pair in train:
        ids = tokenizer.apply_chat_template(pair["prompt"] + pair["chosen"], tokenize=True, return_dict=False)
        assert len(ids) <= 96


def test_non_preference_format_is_a_config_error():
    config = load_recipe("recipes/dpo_qlora_hh.yaml", {"data.format": "messages"})
    with pytest.raises(ConfigError, match="data.format=messages"):
        load_preference_splits(config)


def test_hh_rlhf_raw_keeps_the_prompt_as_raw_text():
    """Anima's form: everything up to and including the last "\\n\\nAssistant:" is the prompt,
    as text, with no chat template; the answers are the rest of each string."""
    pair = normalize_pair({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, "hh_rlhf_raw")
    assert pair == {
        "prompt": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant:",
        "chosen": " Mix flour, water, yeast.",
        "rejected": " No idea.",
    }
    assert pair["prompt"] + pair["chosen"] == HH_CHOSEN and pair["prompt"] + pair["rejected"] == HH_REJECTED


@pytest.mark.parametrize("row, reason", [
    ({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi there"}, "not hh-rlhf"),
    ({"chosen": HH_CHOSEN, "rejected": "\n\nHuman: Other\n\nAssistant: No idea."}, "no shared prefix"),
    ({"chosen": HH_CHOSEN, "rejected": HH_CHOSEN}, "identical"),
    ({"chosen": [{"role": "user", "content": "x"}], "rejected": [{"role": "user", "content": "y"}]}, "bad types"),
])
def test_hh_rlhf_raw_bad_pairs(row, reason):
    with pytest.raises(PairError) as info:
        normalize_pair(row, "hh_rlhf_raw")
    assert info.value.reason == reason


def test_hh_rlhf_raw_recipe_reads_the_shipped_sample(sample_data, tiny_model_dir):
    from transformers import AutoTokenizer

    config = load_recipe({"train": {"method": "dpo"}, "data": {
        "path": str(sample_data / "hh_rlhf_sample.jsonl"), "format": "hh_rlhf_raw", "overlength": "drop"}})
    rows, _, report = load_preference_splits(config, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert report["train_pairs"] == len(rows) > 0
    assert all(isinstance(r["prompt"], str) and r["prompt"].endswith("\n\nAssistant:") for r in rows)
    config.data.system_prompt = "Be kind."
    with pytest.raises(ConfigError, match="hh_rlhf_raw: the raw hh-rlhf prompt has no system turn"):
        load_preference_splits(config)


def test_dpo_prompt_history_goes_through_the_think_policy(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "<think>r</think>a1"},
                   {"role": "user", "content": "q2"}],
        "chosen": [{"role": "assistant", "content": "<think>why</think>good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    path = write_jsonl(tmp_path / "p.jsonl", [row])
    [pair] = read_preference_pairs(str(path)).rows
    assert pair["prompt"][1]["content"] == "a1"
    assert pair["chosen"] == row["chosen"]  # the scored answer keeps its reasoning
    [kept] = read_preference_pairs(str(path), model=ModelConfig(think_policy="keep")).rows
    assert kept["prompt"] == row["prompt"]

import json

import pytest
import torch

from tifa_lite.data.preference import read_preference_pairs
from tifa_lite.evaluation.preference import (
    _fit, _ids, completion_logps, evaluate_preference, evaluate_preference_files,
)


@pytest.fixture(scope="module")
def pairs(sample_data):
    return read_preference_pairs(str(sample_data / "hh_rlhf_sample.jsonl")).rows[:6]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_completion_starts_after_the_prompt(tiny, pairs):
    _, tokenizer = tiny
    prompt_ids, completion_ids = _ids(tokenizer, pairs[0]["prompt"], pairs[0]["chosen"])
    assert tokenizer.decode(completion_ids).startswith(pairs[0]["chosen"][0]["content"][:20])
    assert tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    seq, prompt_len = _fit(prompt_ids, completion_ids, 16)
    assert len(seq) == 16 and seq[prompt_len:] == completion_ids[: 16 - prompt_len]


def test_logps_do_not_depend_on_batch_padding(tiny, pairs):
    model, tokenizer = tiny
    items = [_fit(*_ids(tokenizer, p["prompt"], p["chosen"]), 256) for p in pairs]
    batched = completion_logps(model, tokenizer, items, batch_size=6)
    single = completion_logps(model, tokenizer, items, batch_size=1)
    assert batched == pytest.approx(single, rel=1e-4, abs=1e-3)
    assert all(v < 0 for v in single)


def test_swapping_sides_mirrors_the_result(tiny, pairs):
    model, tokenizer = tiny
    result = evaluate_preference(model, tokenizer, pairs)
    swapped = evaluate_preference(model, tokenizer, [dict(p, chosen=p["rejected"], rejected=p["chosen"]) for p in pairs])
    assert result["kind"] == "logprob" and result["n"] == 6
    assert swapped["mean_margin"] == pytest.approx(-result["mean_margin"], rel=1e-4)
    assert result["accuracy"] + swapped["accuracy"] + 2 * result["ties"] / 6 == pytest.approx(1.0)


def test_implicit_reward_is_relative_to_the_base(tiny, pairs):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    policy = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=True))
    # A fresh adapter (B = 0) is the base itself: every implicit reward is exactly 0, a tie.
    fresh = evaluate_preference(policy, tokenizer, pairs)
    assert fresh["kind"] == "implicit_reward" and fresh["ties"] == 6 and fresh["accuracy"] == 0.0
    torch.manual_seed(0)
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    moved = evaluate_preference(policy, tokenizer, pairs)
    raw = evaluate_preference(policy, tokenizer, pairs, reference="none")
    with policy.disable_adapter():
        base = evaluate_preference(policy.get_base_model(), tokenizer, pairs)
    assert moved["ties"] == 0
    assert moved["mean_margin"] == pytest.approx(raw["mean_margin"] - base["mean_margin"], rel=1e-3, abs=1e-3)
    policy.unload()


def test_reward_model_scores(tmp_path, tiny_model_dir, sample_data):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig.from_pretrained(tiny_model_dir, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "rm")
    result = evaluate_preference_files(str(sample_data / "hh_rlhf_sample.jsonl"), str(tmp_path / "rm"), limit=5)
    assert result["kind"] == "reward_model" and result["n"] == 5 and 0.0 <= result["accuracy"] <= 1.0


def test_cli_last_line_is_json(tiny_model_dir, sample_data, capsys):
    from tifa_lite.cli import main

    assert main(["eval", "preference", "--model", str(tiny_model_dir), "--data",
                 str(sample_data / "hh_rlhf_sample.jsonl"), "--limit", "3", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["n"] == 3 and set(last) >= {"accuracy", "n"}


@pytest.mark.slow
def test_embedded_model_accuracy_on_real_pairs(embedded_model_dir, sample_data):
    result = evaluate_preference_files(str(sample_data / "hh_rlhf_sample.jsonl"), str(embedded_model_dir), limit=8,
                                       max_length=256)
    assert result["kind"] == "logprob" and result["n"] == 8 and result["ties"] == 0

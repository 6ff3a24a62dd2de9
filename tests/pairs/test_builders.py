import json

import pytest

from tifa_lite.data.preference import read_preference_pairs
from tifa_lite.pairs import GenerationSettings, PromptItem, anti_repetition, read_prompts, reference_vs_self
from tifa_lite.pairs import builders


def test_read_prompts_from_hh_pairs_keeps_reference(sample_data):
    items = read_prompts(str(sample_data / "hh_rlhf_sample.jsonl"), limit=3, need_reference=True)
    assert len(items) == 3
    assert items[0].prompt[-1]["role"] == "user" and items[0].reference
    assert items[0].where.endswith("hh_rlhf_sample.jsonl:1")


def test_read_prompts_other_forms(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "Say hi", "response": "hi"},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {"question": "What is 3*3?", "answer": "9"},
        {"instruction": "Name a colour", "input": "", "output": "red"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_prompts(str(path), system_prompt="Be brief.")
    assert [i.reference for i in items] == ["hi", "4", "9", "red"]
    assert all(i.prompt[0] == {"role": "system", "content": "Be brief."} for i in items)


def test_read_prompts_strips_reasoning_from_prompt_history(tmp_path):
    path = tmp_path / "p.jsonl"
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>two twos</think>4"},
                {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "<think>x</think>6"}]
    path.write_text(json.dumps({"messages": messages}) + "\n")
    [item] = read_prompts(str(path))
    assert [m["content"] for m in item.prompt] == ["2+2?", "4", "3+3?"]
    assert item.reference == "<think>x</think>6"


def test_anti_repetition_selection(monkeypatch):
    """Selection rules on fixed samples: least/most repetitive, min_gap, short samples never chosen."""
    samples = {
        "p1": ["one two three four five six seven eight nine ten",
               "go go go go go go go go go go go go", "a b c"],
        "p2": ["alpha beta gamma delta epsilon zeta eta theta iota", "alpha beta gamma delta alpha beta gamma delta"],
    }
    monkeypatch.setattr(builders, "generate", lambda m, t, prompts, s: [samples[p[0]["content"]] for p in prompts])
    items = [PromptItem([{"role": "user", "content": k}], None, f"f:{i}") for i, k in enumerate(samples)]
    pairs, report = anti_repetition(None, None, items, GenerationSettings(num_samples=3), ngram=3, min_gap=0.5)
    assert report.pairs == 1 and report.skipped == {"gap below min_gap": 1}
    pair = pairs[0]
    assert pair["chosen"][0]["content"].startswith("one two")
    assert pair["rejected"][0]["content"].startswith("go go")
    assert pair["chosen_score"] == 0.0 and pair["rejected_score"] == pytest.approx(0.9)
    assert pair["source"] == "f:0"


def test_anti_repetition_tie_contrasts_two_samples(monkeypatch):
    """No repetition anywhere and min_gap 0: the pair still holds two different samples."""
    samples = ["the cat sat on the mat today", "a dog ran in the park at noon", "the cat sat on the mat today"]
    monkeypatch.setattr(builders, "generate", lambda m, t, prompts, s: [samples for _ in prompts])
    items = [PromptItem([{"role": "user", "content": "p"}], None, "f:0")]
    pairs, report = anti_repetition(None, None, items, GenerationSettings(num_samples=3), ngram=3, min_gap=0.0, min_units=1)
    assert report.pairs == 1
    assert pairs[0]["chosen"][0]["content"] == samples[0] and pairs[0]["rejected"][0]["content"] == samples[1]
    identical = ["same words here again and again"] * 2
    monkeypatch.setattr(builders, "generate", lambda m, t, prompts, s: [identical for _ in prompts])
    pairs, report = anti_repetition(None, None, items, GenerationSettings(num_samples=2), ngram=3, min_gap=0.0, min_units=1)
    assert pairs == [] and report.skipped == {"no distinct samples": 1}


@pytest.mark.slow
def test_builders_on_real_generations(embedded_model_dir, sample_data, tmp_path):
    """Both builders on real samples of the embedded SmolLM2, written and read back as DPO data."""
    from tifa_lite.modeling.inference import load_inference_model
    from tifa_lite.pairs import write_pairs

    model, tokenizer, *_ = load_inference_model(str(embedded_model_dir))
    items = read_prompts(str(sample_data / "hh_rlhf_sample.jsonl"), limit=2, need_reference=True)
    settings = GenerationSettings(num_samples=4, max_new_tokens=32, temperature=1.0, batch_size=8, seed=1)
    pairs, report = anti_repetition(model, tokenizer, items, settings, ngram=2, min_gap=0.0, min_units=1)
    assert report.prompts == 2 and report.pairs + sum(report.skipped.values()) == 2
    for pair in pairs:
        assert pair["chosen_score"] <= pair["rejected_score"]
        assert len(pair["sample_scores"]) == 4 and pair["chosen"][0]["content"].strip()

    ref_pairs, ref_report = reference_vs_self(model, tokenizer, items, GenerationSettings(max_new_tokens=24, do_sample=False))
    assert ref_report.pairs == 2
    assert [p["chosen"][0]["content"] for p in ref_pairs] == [i.reference for i in items]
    assert all(p["rejected"][0]["content"] != p["chosen"][0]["content"] for p in ref_pairs)

    path = write_pairs(pairs + ref_pairs, tmp_path / "pairs.jsonl")
    loaded = read_preference_pairs(str(path))
    assert len(loaded.rows) == len(pairs) + 2 and loaded.conversational

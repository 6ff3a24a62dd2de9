"""Every inference entry point in the T4 and the A10 rehearsal: chat --once, eval gsm8k /
preference / roleplay, pairs, merge --dtype auto with its self-check, the reward-model GRPO
reward, the quickstart's measure step and one pipeline stage. Each loads a 4-bit base (the
T4's fp32 norms and fp16 heads, run outside autocast) with an adapter trained in the same
rehearsal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tifa_lite.cli import main

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
pytestmark = pytest.mark.slow

STEP = {"data.limit": 2, "data.max_length": 256, "data.eval_ratio": 0.0, "data.overlength": "truncate",
        "train.max_steps": 1, "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1,
        "train.global_batch_size": None,
        "train.warmup_ratio": 0.0, "train.progress_bar": False, "train.gradient_checkpointing": False,
        "train.eval_steps": None, "lora.r": 4, "lora.alpha": 8}


@pytest.fixture(scope="module", params=["t4", "a10"])
def rehearsed(request, tiny_model_dir, tmp_path_factory):
    """``(card, sft adapter, reward adapter)``, trained in the card's rehearsal; the variable stays
    set for the tests that use them."""
    from tifa_lite import train

    out = tmp_path_factory.mktemp(f"rehearsed_{request.param}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIFA_LITE_REHEARSE", request.param)
        sft = train("recipes/sft_qlora_roleplay.yaml", **{
            **STEP, "model.name_or_path": str(tiny_model_dir), "data.path": str(DATA / "roleplay_sheldon_sample.jsonl"),
            "train.output_dir": str(out / "sft")}).output_dir
        reward = train("recipes/reward_qlora_hh.yaml", **{
            **STEP, "model.name_or_path": str(tiny_model_dir), "data.path": str(DATA / "hh_rlhf_sample.jsonl"),
            "data.max_length": 128, "train.output_dir": str(out / "reward")}).output_dir
        assert json.loads((sft / "run_plan.json").read_text())["hardware"]["rehearsal"] == request.param
        yield request.param, sft, reward


@pytest.fixture
def card(rehearsed, monkeypatch):
    monkeypatch.setenv("TIFA_LITE_REHEARSE", rehearsed[0])
    return rehearsed


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_chat_once(card, capsys):
    _, sft, _ = card
    # Generation outside autocast on the 4-bit base: on a T4 plan this crashed before the heads cast their input.
    assert main(["chat", "--adapter", str(sft), "--bits", "4", "--once", "Hello, Sheldon.", "--max-new-tokens", "4",
                 "--preset", "greedy"]) == 0


def test_eval_gsm8k(card, capsys):
    _, sft, _ = card
    assert main(["eval", "gsm8k", "--adapter", str(sft), "--bits", "4", "--data", str(DATA / "gsm8k_sample.jsonl"),
                 "--limit", "2", "--max-new-tokens", "4", "--json"]) == 0
    result = _last_json(capsys)
    assert result["n"] == 2 and 0.0 <= result["accuracy"] <= 1.0


def test_eval_preference_with_the_reward_model(card, capsys):
    _, _, reward = card
    assert main(["eval", "preference", "--adapter", str(reward), "--bits", "4", "--data", str(DATA / "hh_rlhf_sample.jsonl"),
                 "--limit", "2", "--max-length", "128", "--json"]) == 0
    assert _last_json(capsys)["n"] == 2


def test_eval_roleplay(card, capsys):
    _, sft, _ = card
    assert main(["eval", "roleplay", "--adapter", str(sft), "--bits", "4", "--data",
                 str(DATA / "roleplay_sheldon_heldout.jsonl"), "--limit", "2", "--max-length", "256", "--json"]) == 0
    result = _last_json(capsys)
    assert result["n"] == 2 and result["ppl"] > 1.0


def test_pairs(card, tmp_path, capsys):
    _, sft, _ = card
    out = tmp_path / "pairs.jsonl"
    code = main(["pairs", "anti-repetition", "--adapter", str(sft), "--bits", "4", "--data",
                 str(DATA / "gsm8k_sample.jsonl"), "--limit", "1", "--samples", "2", "--max-new-tokens", "6",
                 "--min-gap", "0", "--min-units", "1", "--output", str(out)])
    # Sampled generations on the 4-bit base ran; a prompt whose two samples tie yields no pair (exit 2, no file).
    assert (code, out.is_file()) in ((0, True), (2, False))
    if code == 0:
        assert _last_json(capsys)["prompts"] == 1


def test_reward_model_reward_scores_on_the_plans_hardware(card):
    from tifa_lite.hardware import detect
    from tifa_lite.rewards.reward_model import make_reward_model

    _, _, reward = card
    score = make_reward_model(str(reward), bits=4, hardware=detect())
    values = score([[{"role": "user", "content": "Hi"}]] * 2, [[{"role": "assistant", "content": "Hello!"}],
                                                              [{"role": "assistant", "content": "Go away."}]])
    assert len(values) == 2 and all(v == v for v in values)  # finite, not NaN


def test_quickstart_measure_step(card):
    from tifa_lite.evaluation.gsm8k import generate_greedy
    from tifa_lite.evaluation.roleplay import perplexity, read_conversations
    from tifa_lite.modeling.inference import load_inference_model
    from tifa_lite.training.quickstart import held_out_prompts

    _, sft, _ = card
    model, tokenizer, *_ = load_inference_model(None, sft, bits=4)  # the quickstart's measure(adapter)
    replies = generate_greedy(model, tokenizer, held_out_prompts(1), max_new_tokens=4)
    assert len(replies) == 1
    nll = perplexity(model, tokenizer, read_conversations(DATA / "roleplay_sheldon_heldout.jsonl", limit=2),
                     max_length=256).nll
    assert nll == nll and nll > 0


def test_merge_dtype_auto_self_checks(card, tmp_path):
    from tifa_lite.merging import merge

    name, sft, _ = card
    report = merge(sft, tmp_path / "merged", dtype="auto")
    assert report["dtype"] == {"t4": "fp16", "a10": "bf16"}[name]
    assert report["self_check"]["passed"]


def test_serve_answers_one_request(card):
    """The server's session loads through the same inference loader (4-bit base) and replies."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
    from fastapi.testclient import TestClient

    from tifa_lite.conversation.session import chat
    from tifa_lite.serving.openai_api import ChatServer, build_app

    _, sft, _ = card
    server = ChatServer(chat(None, str(sft), bits=4, do_sample=False, max_new_tokens=4), "rehearsed", context_length=256)
    with TestClient(build_app(server)) as client:
        response = client.post("/v1/chat/completions", json={
            "model": "rehearsed", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"


def test_one_pipeline_stage(card, tiny_model_dir, tmp_path):
    """A pipeline's QLoRA stage trains under the card's plan and merges with --dtype auto."""
    import yaml

    from tifa_lite.training.pipeline import run_pipeline

    name, _, _ = card
    recipe = tmp_path / "sft.yaml"
    recipe.write_text((REPO / "recipes" / "sft_qlora_roleplay.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "out"), "model": str(tiny_model_dir),
        "overrides": {**STEP, "data.path": str(DATA / "roleplay_sheldon_sample.jsonl")},
        "stages": [{"name": "sft", "recipe": "sft.yaml", "merge": True}],
    }, sort_keys=False))
    run_pipeline(spec)
    stage_dir = tmp_path / "out" / "00_sft"
    plan = json.loads(next(stage_dir.rglob("run_plan.json")).read_text())
    assert plan["hardware"]["rehearsal"] == name
    merged = json.loads(next(stage_dir.rglob("merge_report.json")).read_text())
    assert merged["dtype"] == {"t4": "fp16", "a10": "bf16"}[name] and merged["self_check"]["passed"]

"""Many characters on one base (``serve --adapter NAME=PATH …``): each adapter is a model id,
chosen per request by ``model``, with its run's template, sampling and think policy; rows of
different characters share a batch; the base is loaded once; each served adapter matches the
same adapter merged (the parity check); and the vLLM command line carries every adapter."""

from __future__ import annotations

import json

import pytest
import yaml

httpx = pytest.importorskip("httpx")

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def _make_adapter(base_dir, out, seed: int, model_fields: dict, sampling: dict):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    (out / "resolved_config.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": str(base_dir), **model_fields}}))
    (out / "tifa_sampling.json").write_text(json.dumps(sampling))
    return out


@pytest.fixture(scope="module")
def characters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("characters")
    tong = _make_adapter(tiny_model_dir, root / "tong", 1, {}, {"do_sample": False, "max_new_tokens": 5})
    hermione = _make_adapter(tiny_model_dir, root / "hermione", 2,
                             {"chat_template": "deepseek_r1", "think_policy": "keep"},
                             {"do_sample": False, "max_new_tokens": 4, "repetition_penalty": 1.2})
    return {"tong": tong, "hermione": hermione}


@pytest.fixture(scope="module")
def many(tiny_model_dir, characters):
    from tests.serving.conftest import _run
    from tifa_lite.conversation.session import chat
    from tifa_lite.serving.adapters import attach
    from tifa_lite.serving.openai_api import ChatServer

    session = chat(str(tiny_model_dir), preset="greedy", max_new_tokens=6)  # its own: the model becomes a PeftModel
    server = ChatServer(session, "base", context_length=512, personas=attach(session, characters))
    for url in _run(server):
        yield server, url


def _merged_reply(persona, merged, max_new_tokens: int) -> list[int]:
    import torch

    ids = persona.session.prompt_ids(HELLO)["input_ids"]
    with torch.no_grad():
        out = merged.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                              repetition_penalty=persona.session.sampling.get("repetition_penalty", 1.0),
                              pad_token_id=persona.session.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_models_lists_the_base_and_each_character(many):
    server, url = many
    data = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    assert [m["id"] for m in data] == ["base", "tong", "hermione"]
    meta = {m["id"]: m["meta"] for m in data}
    assert meta["tong"]["adapter"] and not meta["base"]["adapter"]
    assert meta["tong"]["sampling"]["max_new_tokens"] == 5 and meta["hermione"]["sampling"]["repetition_penalty"] == 1.2
    assert (meta["hermione"]["think_policy"], meta["tong"]["think_policy"]) == ("keep", "strip")
    # one base: every character runs on the same model object
    assert len({id(p.session.model) for p in server.personas.values()}) == 1
    assert set(server.session.model.peft_config) == {"tong", "hermione"}


def test_each_character_answers_with_its_own_adapter_and_template(many, characters, tiny_model_dir):
    from tifa_lite.serving.adapters import merged_copy

    server, url = many
    tokens = {}
    for name in ("tong", "hermione"):
        persona = server.personas[name]
        job = server.prepare(json.dumps({"model": name, "messages": HELLO}).encode())[1]
        sink = server.sink(job)
        server.submit(job, sink).result(timeout=60)
        tokens[name] = sink.rows[0].tokens
        max_new = persona.session.sampling["max_new_tokens"]
        assert len(tokens[name]) <= max_new  # the run's own max_new_tokens
        assert tokens[name] == _merged_reply(persona, merged_copy(tiny_model_dir, characters[name]), max_new)
    assert server.personas["hermione"].session.opens_think(HELLO)  # deepseek_r1, from its run
    assert not server.personas["tong"].session.opens_think(HELLO)
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "hermione", "messages": HELLO}, timeout=60)
    assert r.status_code == 200 and r.json()["model"] == "hermione"
    assert r.json()["choices"][0]["message"]["content"].startswith("<think>")
    missing = httpx.post(f"{url}/v1/chat/completions", json={"model": "nobody", "messages": HELLO}, timeout=60)
    assert missing.status_code == 404 and "tong" in missing.json()["error"]["message"]


def test_characters_share_a_batch_and_answer_as_alone(many):
    server, _ = many

    def run(names):
        jobs = [server.prepare(json.dumps({"model": n, "messages": HELLO, "max_tokens": 4}).encode())[1] for n in names]
        sinks = [server.sink(j) for j in jobs]
        futures = [server.submit(j, s) for j, s in zip(jobs, sinks)]
        [f.result(timeout=60) for f in futures]
        return [s.rows[0].tokens for s in sinks]

    names = ["base", "tong", "hermione", "tong"]
    alone = [run([n])[0] for n in names]
    assert run(names) == alone
    assert len({tuple(t) for t in alone[:3]}) == 3  # three different models really answered


def test_parity_served_vs_merged(many, characters, tiny_model_dir):
    from tifa_lite.serving.adapters import merged_copy, parity

    server, _ = many
    prompts = [HELLO, [{"role": "user", "content": "Tell me a story about the bar."}]]
    for name in ("tong", "hermione"):
        row = parity(server.personas[name], merged_copy(tiny_model_dir, characters[name]), prompts, max_new_tokens=6)
        assert row["greedy_same"] == 2 and row["argmax_agree"] == 1.0 and row["kl_max"] < 1e-4, row


def test_serve_command_serves_named_adapters(tiny_model_dir, characters, monkeypatch):
    from tifa_lite.cli import main
    from tifa_lite.serving import openai_api

    seen = {}
    monkeypatch.setattr(openai_api, "serve", lambda server, host, port, cors_origins=None: seen.update(
        server=server, cors=cors_origins))
    assert main(["serve", "--model", str(tiny_model_dir), "--name", "smol", "--adapter", f"tong={characters['tong']}",
                 "--adapter", f"hermione={characters['hermione']}", "--cors-origin", "*"]) == 0
    assert list(seen["server"].personas) == ["smol", "tong", "hermione"] and seen["cors"] == ["*"]


@pytest.mark.parametrize("values,match", [
    (["a=x", "a=y"], "given twice"),
    (["bad name=x"], "must be letters"),
    (["plain", "a=x"], "NAME=PATH"),
])
def test_adapter_arguments_are_checked(values, match, tmp_path):
    from tifa_lite.errors import ConfigError
    from tifa_lite.serving.adapters import parse_adapters

    for folder in ("x", "y"):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=match):
        parse_adapters([v.replace("=x", f"={tmp_path / 'x'}").replace("=y", f"={tmp_path / 'y'}") for v in values])


def test_vllm_command_serves_every_adapter_as_a_lora_module(tiny_model_dir, characters, tmp_path):
    from tifa_lite.serving.engines import engine_spec
    from tifa_lite.serving.vllm_engine import vllm_command

    spec = engine_spec(str(tiny_model_dir), None, "smol", preset="greedy")
    cmd = vllm_command(spec, tmp_path / "t.jinja", "127.0.0.1", 8000, adapters=characters, cors_origins=["*"])
    at = cmd.index("--lora-modules")
    assert cmd[at + 1: at + 3] == [f"tong={characters['tong']}", f"hermione={characters['hermione']}"]
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-loras") + 1] == "2"
    assert cmd[cmd.index("--max-lora-rank") + 1] == "8"  # r=4, rounded up to what vLLM accepts
    assert cmd[cmd.index("--served-model-name") + 1] == "smol"  # the base under its own name
    assert json.loads(cmd[cmd.index("--allowed-origins") + 1]) == ["*"]


def test_check_adapters_command_prints_the_parity_table(tiny_model_dir, characters, tmp_path, capsys):
    from tifa_lite.cli import main

    prompts = tmp_path / "held_out.jsonl"
    prompts.write_text(json.dumps({"messages": [*HELLO, {"role": "assistant", "content": "Tong."}]}) + "\n")
    assert main(["serve", "--model", str(tiny_model_dir), "--adapter", f"tong={characters['tong']}",
                 "--adapter", f"hermione={characters['hermione']}", "--check-adapters", "--check-prompts", str(prompts),
                 "--check-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "greedy same" in out and out.count("\ntong ") + out.count("\nhermione ") == 2

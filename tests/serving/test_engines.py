"""The engines beside our own server: the request rules and recipe defaults every engine gets
(engine_body, the ASGI middleware in front of llama.cpp's server), llama.cpp's settings and
the `vllm serve` command line, and the CLI that picks them. The real llama.cpp run is in the
opt-in group (test_llamacpp_engine.py); vLLM runs only on a CUDA GPU."""

from __future__ import annotations

import json

import pytest

from tests.serving.frontend_requests import FRONTEND_REQUESTS, HELLO
from tifa_lite.serving.engines import EngineSpec, NormalisedRequests, engine_body, engine_spec
from tifa_lite.serving.requests import BadRequest


@pytest.fixture(scope="module")
def spec(tiny_model_dir) -> EngineSpec:
    return engine_spec(str(tiny_model_dir), None, "tiny", preset="tifa", system="You are Tifa.", max_tokens_cap=64)


def test_spec_reads_the_template_and_the_recipe_sampling(spec, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert spec.chat_template == tokenizer.chat_template and spec.base == str(tiny_model_dir)
    assert spec.sampling["temperature"] == 0.4 and spec.sampling["repetition_penalty"] == 1.17  # preset tifa
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in spec.stop_token_ids


def test_engine_body_fills_the_recipe_sampling_and_applies_the_request_rules(spec):
    raw = json.dumps({"messages": [
        {"role": "developer", "content": "Stay in character."},
        {"role": "user", "name": "Cloud", "content": "Hi"},
        {"role": "assistant", "content": "<think>be warm</think>Hello!"},
        {"role": "user", "content": "Again?"},
    ], "max_tokens": 4000, "presence_penalty": 0.7, "tools": [], "reasoning_effort": "low"}).encode()
    body = engine_body(raw, spec, penalty_key="repeat_penalty")
    assert body["messages"] == [
        {"role": "system", "content": "Stay in character."},
        {"role": "user", "content": "Cloud: Hi"},
        {"role": "assistant", "content": "Hello!"},  # the think policy, as our server applies it
        {"role": "user", "content": "Again?"},
    ]
    # every sampling key explicit: llama.cpp's own defaults (min_p 0.05, top_k 40) never apply
    assert (body["temperature"], body["top_p"], body["top_k"], body["min_p"]) == (0.4, 0.6, 0, 0.0)
    assert body["repeat_penalty"] == 1.17 and body["presence_penalty"] == 0.7
    assert body["max_tokens"] == 64  # the cap
    assert "tools" not in body and "reasoning_effort" not in body and body["model"] == "tiny"


def test_engine_body_adds_the_card_and_keeps_the_clients_sampling(spec):
    body = engine_body(json.dumps({"messages": HELLO, "temperature": 0.9, "min_p": 0.1, "seed": 3,
                                   "stop": ["\nCloud:"]}).encode(), spec)
    assert body["messages"][0] == {"role": "system", "content": "You are Tifa."}
    assert (body["temperature"], body["min_p"], body["seed"], body["stop"]) == (0.9, 0.1, 3, ["\nCloud:"])
    assert body["repetition_penalty"] == 1.17


@pytest.mark.parametrize("name", sorted(FRONTEND_REQUESTS))
def test_front_end_bodies_pass_through(spec, name):
    body = engine_body(json.dumps(FRONTEND_REQUESTS[name]).encode(), spec)
    assert body["messages"] and body["stream"] == FRONTEND_REQUESTS[name]["stream"]


@pytest.mark.parametrize("bad,param", [({"messages": HELLO, "n": 3}, "n"),
                                       ({"messages": HELLO, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
                                       ({"messages": HELLO, "response_format": {"type": "json_object"}}, "response_format")])
def test_engine_body_refuses_like_our_server(spec, bad, param):
    with pytest.raises(BadRequest) as refused:
        engine_body(json.dumps(bad).encode(), spec)
    assert refused.value.param == param


def test_middleware_rewrites_chat_requests_and_answers_refusals_itself(spec):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    seen = []

    async def downstream(request):
        seen.append(await request.json())
        return JSONResponse({"ok": True})

    app = NormalisedRequests(Starlette(routes=[Route("/v1/chat/completions", downstream, methods=["POST"]),
                                               Route("/v1/models", lambda r: JSONResponse({"data": []}))]),
                             spec, penalty_key="repeat_penalty")
    with TestClient(app) as client:
        ok = client.post("/v1/chat/completions", json={"messages": HELLO, "logprobs": False})
        assert ok.status_code == 200 and seen[-1]["repeat_penalty"] == 1.17 and "logprobs" not in seen[-1]
        refused = client.post("/v1/chat/completions", json={"messages": HELLO, "n": 2})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "n" and len(seen) == 1
        assert client.get("/v1/models").status_code == 200
    big = NormalisedRequests(app.app, EngineSpec(**{**spec.__dict__, "max_body_bytes": 100}))
    with TestClient(big) as client:
        assert client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 200}]}).status_code == 413


def test_llamacpp_settings_use_our_template_and_leave_other_streams_alone(spec, tmp_path):
    from tifa_lite.serving import llamacpp_engine

    server, model = llamacpp_engine.settings(spec, tmp_path / "m.gguf", "127.0.0.1", 8001, n_ctx=2048)
    assert server == {"host": "127.0.0.1", "port": 8001, "interrupt_requests": False}
    assert model["chat_format"] == "tifa-lite:tiny" and model["model_alias"] == "tiny" and model["n_ctx"] == 2048


def test_llamacpp_needs_a_gguf(tmp_path, embedded_model_dir):
    from tifa_lite.errors import ConfigError
    from tifa_lite.serving.llamacpp_engine import gguf_for

    with pytest.raises(ConfigError, match="export gguf"):
        gguf_for(str(embedded_model_dir), None)
    with pytest.raises(ConfigError, match="no such file"):
        gguf_for(None, str(tmp_path / "missing.gguf"))
    assert gguf_for("smollm2-135m-instruct", None).suffix == ".gguf"


def _adapter(tmp_path, r: int = 16):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, "base_model_name_or_path": "base"}))
    return folder


def test_vllm_command_serves_base_adapter_template_and_sampling(spec, tmp_path):
    from tifa_lite.serving.vllm_engine import vllm_command

    with_adapter = EngineSpec(**{**spec.__dict__, "adapter_dir": _adapter(tmp_path, r=24)})
    cmd = vllm_command(with_adapter, tmp_path / "t.jinja", "127.0.0.1", 8002, bits=4)
    assert cmd[:3] == ["vllm", "serve", spec.base]

    def value(flag):
        return cmd[cmd.index(flag) + 1]

    assert value("--lora-modules") == f"tiny={tmp_path / 'adapter'}" and "--enable-lora" in cmd
    assert value("--max-lora-rank") == "32"  # r=24, rounded up to a rank vLLM accepts
    assert value("--served-model-name") == "tiny-base" and value("--chat-template") == str(tmp_path / "t.jinja")
    assert value("--generation-config") == "vllm" and value("--quantization") == "bitsandbytes"
    assert json.loads(value("--override-generation-config")) == {
        "temperature": 0.4, "top_p": 0.6, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.17, "max_new_tokens": 64}
    plain = vllm_command(spec, tmp_path / "t.jinja", "127.0.0.1", 8002)
    assert "--enable-lora" not in plain and plain[plain.index("--served-model-name") + 1] == "tiny"


def test_serve_engine_vllm_without_cuda_is_a_clear_error(tiny_model_dir, capsys):
    import torch

    from tifa_lite.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error is for machines without it")
    assert main(["serve", "--engine", "vllm", "--model", str(tiny_model_dir)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_serve_engine_vllm_runs_the_built_command(tiny_model_dir, tmp_path, monkeypatch, fake_cuda):
    from tifa_lite.cli import main
    from tifa_lite.serving import vllm_engine

    fake_cuda()
    ran = {}
    monkeypatch.setenv("TIFA_LITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(vllm_engine.shutil, "which", lambda name: "/usr/bin/vllm")
    monkeypatch.setattr("subprocess.call", lambda cmd: ran.setdefault("cmd", cmd) and 0)
    assert main(["serve", "--engine", "vllm", "--model", str(tiny_model_dir), "--name", "tifa", "--preset", "greedy",
                 "--max-tokens-cap", "300"]) == 0
    cmd = ran["cmd"]
    template = cmd[cmd.index("--chat-template") + 1]
    from transformers import AutoTokenizer

    assert open(template, encoding="utf-8").read() == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    assert cmd[:3] == ["vllm", "serve", str(tiny_model_dir)] and cmd[cmd.index("--served-model-name") + 1] == "tifa"
    defaults = json.loads(cmd[cmd.index("--override-generation-config") + 1])
    assert defaults["temperature"] == 0.0 and defaults["max_new_tokens"] == 300


def test_serve_engine_llamacpp_serves_the_embedded_gguf(monkeypatch):
    from tifa_lite.cli import main
    from tifa_lite.serving import llamacpp_engine

    seen = {}
    monkeypatch.setattr(llamacpp_engine, "serve", lambda spec, gguf, host, port, n_ctx, characters: seen.update(
        spec=spec, gguf=gguf, host=host, port=port, n_ctx=n_ctx, characters=characters))
    assert main(["serve", "--engine", "llama.cpp", "--model", "smollm2-135m-instruct", "--port", "8003",
                 "--system", "You are Tifa."]) == 0
    assert seen["gguf"].suffix == ".gguf" and (seen["host"], seen["port"], seen["n_ctx"]) == ("127.0.0.1", 8003, 4096)
    assert seen["spec"].model_id == "smollm2-135m-instruct" and seen["spec"].system == "You are Tifa."
    assert seen["characters"] == {}


@pytest.fixture(scope="module")
def two_characters(tiny_model_dir, tmp_path_factory):
    from tests.serving.test_adapters import _make_adapter

    root = tmp_path_factory.mktemp("engine_characters")
    tong = _make_adapter(tiny_model_dir, root / "tong", 1, {}, {"do_sample": False, "max_new_tokens": 5})
    hermione = _make_adapter(tiny_model_dir, root / "hermione", 2, {"chat_template": "deepseek_r1", "think_policy": "keep"},
                             {"do_sample": True, "temperature": 0.7, "max_new_tokens": 4, "repetition_penalty": 1.2})
    return {"tong": tong, "hermione": hermione}


def test_middleware_gives_each_character_its_own_template_sampling_and_think_policy(spec, two_characters):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from tifa_lite.serving.engines import character_spec

    characters = {name: character_spec(spec, name, folder) for name, folder in two_characters.items()}
    assert "<think>" in characters["hermione"].chat_template and not characters["hermione"].strip_think
    assert characters["tong"].strip_think and characters["tong"].chat_template == spec.chat_template
    seen = []

    async def downstream(request):
        seen.append(await request.json())
        return JSONResponse({"ok": True})

    app = NormalisedRequests(Starlette(routes=[Route("/v1/chat/completions", downstream, methods=["POST"])]), spec,
                             penalty_key="repeat_penalty", characters=characters)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>hm</think>Hello."},
               {"role": "user", "content": "Again?"}]
    with TestClient(app) as client:
        for model in ("tong", "hermione", "tiny", None):
            assert client.post("/v1/chat/completions", json={"model": model, "messages": history}).status_code == 200
        tong, hermione, base, unnamed = seen
        assert (tong["model"], tong["temperature"], tong["max_tokens"]) == ("tong", 0.0, 5)
        assert (hermione["model"], hermione["temperature"], hermione["repeat_penalty"]) == ("hermione", 0.7, 1.2)
        assert "<think>" in hermione["messages"][-2]["content"] and "<think>" not in tong["messages"][-2]["content"]
        assert base["model"] == unnamed["model"] == "tiny" and base["repeat_penalty"] == 1.17
        refused = client.post("/v1/chat/completions", json={"model": "aerith", "messages": HELLO})
        assert refused.status_code == 404 and "tong" in refused.json()["error"]["message"] and len(seen) == 4


def test_serve_engine_llamacpp_serves_each_named_adapter_as_a_lora(monkeypatch, two_characters, tmp_path):
    from tifa_lite.cli import main
    from tifa_lite.export import llamacpp_lora
    from tifa_lite.serving import llamacpp_engine

    converted, seen = [], {}

    def fake_convert(folder, base):
        converted.append((folder, base))
        return tmp_path / f"{folder.name}.gguf"

    monkeypatch.setattr(llamacpp_lora, "cached_lora_gguf", fake_convert)
    monkeypatch.setattr(llamacpp_engine, "serve", lambda spec, gguf, host, port, n_ctx, characters: seen.update(
        spec=spec, characters=characters))
    assert main(["serve", "--engine", "llama.cpp", "--model", "smollm2-135m-instruct",
                 "--adapter", f"tong={two_characters['tong']}", "--adapter", f"hermione={two_characters['hermione']}"]) == 0
    assert [folder.name for folder, _ in converted] == ["tong", "hermione"]
    assert {name: (c.model_id, lora.name) for name, (c, lora) in seen["characters"].items()} == {
        "tong": ("tong", "tong.gguf"), "hermione": ("hermione", "hermione.gguf")}
    assert seen["characters"]["hermione"][0].sampling["repetition_penalty"] == 1.2


def test_middleware_hands_the_engine_the_connection_after_the_body(spec):
    """llama.cpp's server watches `request.is_disconnected()` between chunks: after the
    rewritten body, the middleware must pass the real connection's messages through."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def streaming(request):
        body = await request.json()
        gone = await request.is_disconnected()

        async def chunks():
            for word in ("data: a\n\n", f"data: {body['max_tokens']} {gone}\n\n", "data: [DONE]\n\n"):
                yield word

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app = NormalisedRequests(Starlette(routes=[Route("/v1/chat/completions", streaming, methods=["POST"])]), spec)
    with TestClient(app) as client, client.stream("POST", "/v1/chat/completions",
                                                  json={"messages": HELLO, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines == ["data: a", "data: 64 False", "data: [DONE]"]

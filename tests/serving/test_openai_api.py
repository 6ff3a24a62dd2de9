"""The OpenAI-compatible server against good and bad requests, the official `openai`
client (streaming and not), and 50 concurrent requests — all on 127.0.0.1."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")

from tifa_lite.conversation.reply_text import safe_text  # noqa: E402

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def _client(url: str):
    openai = pytest.importorskip("openai", reason="the test extra brings the openai client: pip install -e '.[test]'")
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model(live_server):
    _, url = live_server
    models = _client(url).models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_completion_is_the_session_reply(live_server, tiny_session):
    _, url = live_server
    response = _client(url).chat.completions.create(model="tiny", messages=HELLO, max_tokens=5)
    direct = tiny_session.reply(HELLO, max_new_tokens=5)
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == direct.text
    assert choice.finish_reason == direct.finish_reason
    assert response.usage.prompt_tokens == direct.prompt_tokens
    assert response.usage.completion_tokens == direct.completion_tokens <= 5


def test_streaming_client_gets_the_same_text(live_server):
    _, url = live_server
    client = _client(url)
    whole = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=5).choices[0].message.content
    chunks = list(client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=5, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == whole
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 5


def test_raw_stream_is_server_sent_events_ending_in_done(live_server):
    _, url = live_server
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                      json={"messages": HELLO, "max_tokens": 3, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_history_think_blocks_are_stripped_before_the_model_sees_them(live_server):
    _, url = live_server
    client = _client(url)
    turn = [{"role": "user", "content": "2+2?"}]
    with_think = turn + [{"role": "assistant", "content": "<think>two and two</think>\n4"}, *HELLO]
    without = turn + [{"role": "assistant", "content": "4"}, *HELLO]
    a = client.chat.completions.create(model="tiny", messages=with_think, max_tokens=2)
    b = client.chat.completions.create(model="tiny", messages=without, max_tokens=2)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert a.choices[0].message.content == b.choices[0].message.content


def test_sampling_and_content_parts_are_accepted(live_server):
    _, url = live_server
    r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": "anything", "max_tokens": 3, "temperature": 0.8, "top_p": 0.9, "top_k": 20,
        "repetition_penalty": 1.1, "seed": 1, "presence_penalty": 0.7, "frequency_penalty": 0.7, "user": "u1",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    })
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny" and body["object"] == "chat.completion"
    assert isinstance(body["choices"][0]["message"]["content"], str)


BAD = [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages.0.content"),
    ({"messages": [{"role": "system", "content": "only a system turn"}]}, "messages"),
    ({"messages": HELLO, "temperature": 5}, "temperature"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"messages": HELLO, "n": 5}, "n"),  # above the server's cap of 4
    ({"messages": HELLO, "n": 0}, "n"),
    ({"messages": HELLO, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"},
     "tool_choice"),
    ({"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
    ({"messages": HELLO, "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": HELLO, "frequency_penalty": 2.5}, "frequency_penalty"),
    ({"messages": HELLO, "min_p": 1.5}, "min_p"),
    ({"messages": HELLO, "logit_bias": {"50": 300}}, "logit_bias"),
    ({"messages": HELLO, "logit_bias": {"hello": 1}}, "logit_bias"),
    ({"messages": HELLO, "logit_bias": {"999999999": -100}}, "logit_bias"),  # outside the vocabulary
    ({"messages": HELLO, "stop": [str(i) for i in range(17)]}, "stop"),
    ({"messages": [{"role": "user", "content": "word " * 400}]}, "messages"),  # over the 256-token context
    ({"messages": HELLO, "max_tokens": 10_000}, "messages"),
]


@pytest.mark.parametrize("body,param", BAD, ids=[p for _, p in BAD])
def test_bad_request_is_a_400_naming_the_field(live_server, body, param):
    _, url = live_server
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param or error["message"].startswith(param)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b""])
def test_body_that_is_not_a_json_object_is_a_400(live_server, raw):
    _, url = live_server
    r = httpx.post(f"{url}/v1/chat/completions", content=raw, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "error" in r.json()


def test_unknown_route_is_a_json_404(live_server):
    _, url = live_server
    r = httpx.get(f"{url}/v1/nothing", timeout=30)
    assert r.status_code == 404 and "error" in r.json()


def test_a_failed_generation_answers_500_and_the_server_goes_on(live_server, monkeypatch):
    chat_server, url = live_server
    real = chat_server.session.model.forward
    calls = {"n": 0}

    def fail_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(chat_server.session.model, "forward", fail_once)
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}, timeout=30)
    assert r.status_code == 500 and "simulated out of memory" in r.json()["error"]["message"]
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                      json={"messages": HELLO, "max_tokens": 2, "stream": True}) as s:
        assert s.status_code == 200 and [line for line in s.iter_lines() if line][-1] == "data: [DONE]"
    ok = httpx.post(f"{url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}, timeout=30)
    assert ok.status_code == 200


def test_fifty_concurrent_requests_all_answer_in_bounded_time(live_server):
    _, url = live_server
    n, budget_s = 50, 180.0

    def one(i: int) -> int:
        body = {"messages": [{"role": "user", "content": f"Request {i}: say hi"}], "max_tokens": 2,
                "stream": i % 2 == 0}
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=budget_s)
        return r.status_code

    start = time.monotonic()
    with httpx.Client(), ThreadPoolExecutor(max_workers=n) as pool:
        codes = list(pool.map(one, range(n), timeout=budget_s))
    assert codes == [200] * n
    assert time.monotonic() - start < budget_s


def test_server_default_system_prompt_applies_only_without_one(tiny_session):
    from tifa_lite.serving.openai_api import ChatServer
    from tifa_lite.serving.requests import ChatRequest

    server = ChatServer(tiny_session, "tiny", system="You are Tifa.")
    plain = server.conversation(ChatRequest.model_validate({"messages": HELLO}))
    assert plain[0] == {"role": "system", "content": "You are Tifa."}
    own = server.conversation(ChatRequest.model_validate({"messages": [{"role": "system", "content": "Other."}, *HELLO]}))
    assert own[0]["content"] == "Other." and len(own) == 2


def test_stream_holds_back_a_possible_stop_string():
    assert safe_text("Hello wor", ["world"]) == "Hello"
    assert safe_text("Hello world and more", ["world"]) == "Hello"
    assert safe_text("Hello", None) == "Hello"
    assert safe_text("abc", ["x"]) == "abc"
    assert safe_text("abc ", ["x"], strip=False) == "abc "


def test_serve_command_builds_the_server_from_the_chat_options(tiny_model_dir, tmp_path, monkeypatch):
    from tifa_lite.cli import main
    from tifa_lite.serving import openai_api

    seen = {}
    monkeypatch.setattr(openai_api, "serve", lambda server, host, port, cors_origins=None: seen.update(
        server=server, host=host, port=port, cors=cors_origins))
    card = tmp_path / "card.txt"
    card.write_text("You are Tifa.\n")
    assert main(["serve", "--model", str(tiny_model_dir), "--port", "8123", "--system-file", str(card),
                 "--preset", "greedy", "--max-new-tokens", "3"]) == 0
    server = seen["server"]
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    assert server.model_id == tiny_model_dir.name and server.system == "You are Tifa."
    assert server.session.system is None  # a request's own system turn wins over the card
    assert server.session.sampling["max_new_tokens"] == 3 and server.session.sampling["do_sample"] is False

"""``logprobs``/``top_logprobs`` (SillyTavern's "Request token probabilities") in OpenAI's chat
and completions shapes, streamed and not, and ``n`` replies from one batched generation up to
the server's cap."""

from __future__ import annotations

import json
import math

import pytest
import torch

httpx = pytest.importorskip("httpx")

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def _post(url: str, route: str, body: dict) -> dict:
    r = httpx.post(f"{url}{route}", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _chunks(url: str, route: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{url}{route}", json={**body, "stream": True}, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_chat_logprobs_are_the_models_own_in_openais_shape(live_server, tiny_session):
    _, url = live_server
    body = _post(url, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 5, "temperature": 0,
                                               "logprobs": True, "top_logprobs": 3})
    content = body["choices"][0]["logprobs"]["content"]
    assert 1 <= len(content) <= body["usage"]["completion_tokens"]
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["bytes"] == list(entry["token"].encode("utf-8")) and entry["logprob"] <= 0
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert entry["logprob"] == pytest.approx(tops[0])  # greedy: the chosen token is the likeliest
    assert "".join(e["token"] for e in content).strip() == body["choices"][0]["message"]["content"]
    # the first one is the log-softmax of the raw logits for the prompt (no temperature, no penalties)
    inputs = tiny_session.prompt_ids(HELLO)
    with torch.no_grad():
        logits = tiny_session.model(**inputs).logits[0, -1]
    expected = torch.log_softmax(logits.float(), -1).max().item()
    assert math.isclose(content[0]["logprob"], expected, abs_tol=1e-4)


def test_streamed_logprobs_are_the_whole_ones(live_server):
    _, url = live_server
    body = {"messages": HELLO, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    whole = _post(url, "/v1/chat/completions", body)["choices"][0]["logprobs"]["content"]
    streamed = [entry for c in _chunks(url, "/v1/chat/completions", body) if c["choices"]
                for entry in ((c["choices"][0].get("logprobs") or {}).get("content") or [])]
    assert streamed == whole


def test_openai_client_reads_the_logprobs(live_server):
    openai = pytest.importorskip("openai", reason="the test extra brings the openai client: pip install -e '.[test]'")
    _, url = live_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    r = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, logprobs=True, top_logprobs=2)
    assert len(r.choices[0].logprobs.content[0].top_logprobs) == 2
    c = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=3, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) >= 1
    assert "".join(lp.tokens) == c.choices[0].text  # no end of turn in a text completion of 3 tokens
    assert lp.text_offset[0] == 0 and all(len(top) == 2 for top in lp.top_logprobs)


def test_completion_logprobs_stream_like_the_whole(live_server):
    _, url = live_server
    body = {"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "logprobs": 1}
    whole = _post(url, "/v1/completions", body)["choices"][0]["logprobs"]
    parts = [c["choices"][0]["logprobs"] for c in _chunks(url, "/v1/completions", body)
             if c["choices"] and c["choices"][0]["logprobs"]]
    assert [t for p in parts for t in p["tokens"]] == whole["tokens"]
    assert [t for p in parts for t in p["token_logprobs"]] == whole["token_logprobs"]


def test_n_replies_come_from_one_request_streamed_and_not(live_server):
    _, url = live_server
    body = {"messages": HELLO, "max_tokens": 6, "temperature": 1.0, "seed": 5, "n": 3}
    whole = _post(url, "/v1/chat/completions", body)
    assert [c["index"] for c in whole["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in whole["choices"]]
    assert len(set(texts)) > 1  # sampled separately
    chunks = [c for c in _chunks(url, "/v1/chat/completions", body) if c["choices"]]
    streamed = ["".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"][0]["index"] == i)
                for i in range(3)]
    assert streamed == texts
    finishes = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(finishes) == [0, 1, 2]
    greedy = _post(url, "/v1/completions", {"prompt": "Once", "max_tokens": 3, "temperature": 0, "n": 2})
    assert greedy["choices"][0]["text"] == greedy["choices"][1]["text"]
    assert greedy["usage"]["completion_tokens"] == 6


def test_n_above_the_cap_names_the_cap(live_server):
    _, url = live_server
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": HELLO, "n": 5}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    assert "up to 4" in r.json()["error"]["message"] and "--max-n" in r.json()["error"]["message"]

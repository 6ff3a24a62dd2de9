"""Streamed text equals the whole reply for the same request and seed, with stop strings —
the issue's sets, and stops cut out of the model's own reply so they match across token
boundaries — on the live server, for chat and text completions."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")

HELLO = [{"role": "user", "content": "Hello, who are you?"}]
ISSUE_STOPS = [["\nKai:"], [" the"], ["\n\n", "Kai"]]


def _whole(url: str, route: str, body: dict) -> dict:
    r = httpx.post(f"{url}{route}", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def _streamed(url: str, route: str, body: dict) -> tuple[str, str]:
    with httpx.stream("POST", f"{url}{route}", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:])["choices"][0] for line in lines[:-1]]
    key = "text" if route == "/v1/completions" else "content"
    text = "".join((c.get("delta", c).get(key) or "") for c in chunks)
    return text, [c["finish_reason"] for c in chunks if c["finish_reason"]][-1]


def _bodies(seed: int, stop: list[str] | None):
    sampling = {"temperature": 1.0, "top_k": 40, "seed": seed, "max_tokens": 12, "stop": stop}
    yield "/v1/chat/completions", {"messages": HELLO, **sampling}
    yield "/v1/completions", {"prompt": "Kai: Hello!\nAria:", **sampling}


@pytest.mark.parametrize("seed,stop", enumerate(ISSUE_STOPS), ids=["kai", "the", "para-or-kai"])
def test_stream_equals_whole_reply_under_the_issue_stop_sets(live_server, seed, stop):
    _, url = live_server
    for seed in (seed, seed + 10):
        for route, body in _bodies(seed, stop):
            whole = _whole(url, route, body)
            text = whole["message"]["content"] if "message" in whole else whole["text"]
            assert _streamed(url, route, body) == (text, whole["finish_reason"]), (route, seed)


def test_stream_equals_whole_reply_when_a_stop_falls_inside_the_reply(live_server):
    _, url = live_server
    for seed in (4, 5):
        for route, body in _bodies(seed, None):
            free = _whole(url, route, body)
            text = free["message"]["content"] if "message" in free else free["text"]
            if len(text) < 8:
                continue
            # two stops from the model's own text: one across a token boundary, one overlapping it
            middle = len(text) // 2
            stops = [text[middle - 1: middle + 2], text[middle: middle + 4]]
            cut = {**body, "stop": stops}
            whole = _whole(url, route, cut)
            got = whole["message"]["content"] if "message" in whole else whole["text"]
            assert len(got) < len(text) and whole["finish_reason"] == "stop"
            assert _streamed(url, route, cut) == (got, "stop"), (route, seed, stops)

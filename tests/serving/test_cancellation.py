"""A client that leaves stops its generation: mid-stream within a few tokens, queued never
started; the web page never runs two replies at once; and a soak of 200 mixed requests with
20 mid-stream disconnects leaves the server answering with nothing running for a gone client.
All on 127.0.0.1 with the tiny model."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.serving.frontend_requests import HELLO

httpx = pytest.importorskip("httpx")

LONG = 1500  # tokens a cancelled request asks for: tens of seconds on two cores if it ran on


@pytest.fixture(scope="module")
def long_server(tiny_session):
    from tests.serving.conftest import _run
    from tifa_lite.serving.openai_api import ChatServer

    # one row at a time: a second request waits in the batcher's queue behind the first
    chat_server = ChatServer(tiny_session, "tiny", max_tokens_cap=None, max_batch=1)
    for url in _run(chat_server):
        yield chat_server, url


def _never_ending(session) -> dict:
    """A body whose reply cannot end early: the end-of-turn tokens are banned."""
    from tifa_lite.conversation.template_structure import end_of_turn_ids

    ids = end_of_turn_ids(session.tokenizer, session.model.generation_config.eos_token_id)
    return {"messages": HELLO, "max_tokens": LONG, "stream": True, "logit_bias": {str(i): -100 for i in ids}}


def _read_then_leave(url: str, body: dict, pieces: int = 3) -> int:
    """Stream ``body``, read ``pieces`` content deltas, drop the connection; returns them."""
    seen = 0
    with httpx.Client(timeout=120) as client, client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                seen += 1
                if seen >= pieces:
                    break
    return seen


def _wait_for(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_disconnect_mid_stream_frees_the_worker_within_two_seconds(long_server, tiny_session):
    chat_server, url = long_server
    cancelled = chat_server.counts["cancelled"]
    assert _read_then_leave(url, _never_ending(tiny_session)) == 3
    start = time.monotonic()
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}, timeout=60)
    waited = time.monotonic() - start
    assert r.status_code == 200
    assert waited < 2.0, f"the next request waited {waited:.2f} s behind a gone client's generation"
    assert _wait_for(lambda: chat_server.counts["cancelled"] == cancelled + 1)
    assert chat_server.cancelled_tokens[-1] < LONG
    assert chat_server.health()["running"] == 0
    print(f"next request answered {waited:.2f} s after the disconnect; the gone client's generation stopped "
          f"after {chat_server.cancelled_tokens[-1]} tokens")


def test_queued_request_of_a_gone_client_never_starts(long_server, tiny_session):
    chat_server, url = long_server
    never = chat_server.counts["never_started"]
    holder_reading = threading.Event()

    def queued_then_gone():
        holder_reading.wait(30)
        with pytest.raises(httpx.ReadTimeout):  # the client gives up while its request is queued
            httpx.post(f"{url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}, timeout=0.5)

    body = _never_ending(tiny_session)
    with ThreadPoolExecutor(1) as pool:
        gone = pool.submit(queued_then_gone)
        with httpx.Client(timeout=120) as client, client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if '"content"' in line:
                    holder_reading.set()
                    gone.result(timeout=30)  # the queued client has left; now the holder leaves too
                    break
    assert _wait_for(lambda: chat_server.counts["never_started"] == never + 1)
    assert _wait_for(lambda: chat_server.health()["running"] == 0)


def test_web_page_reply_stops_when_the_page_goes_and_never_overlaps(tiny_session, monkeypatch):
    from tifa_lite.serving.web import respond

    body = _never_ending(tiny_session)
    sampling = {"max_new_tokens": LONG, "do_sample": False, "logit_bias": body["logit_bias"]}
    live, most = [0], [0]
    real = tiny_session.model.generate

    def counting(*args, **kwargs):
        live[0] += 1
        most[0] = max(most[0], live[0])
        try:
            return real(*args, **kwargs)
        finally:
            live[0] -= 1

    monkeypatch.setattr(tiny_session.model, "generate", counting)
    closed = respond(tiny_session, "Hello", [], "", sampling)
    next(closed), next(closed)
    closed.close()  # the tab went away mid-reply
    assert tiny_session.generation_lock.acquire(timeout=2), "the closed page's generation is still running"
    tiny_session.generation_lock.release()
    abandoned = respond(tiny_session, "Hello", [], "", sampling)
    next(abandoned)  # left un-iterated, as a page whose tab closed without the generator being closed
    start = time.monotonic()
    final = list(respond(tiny_session, "Hi", [], "", {"max_new_tokens": 3, "do_sample": False}))[-1]
    assert time.monotonic() - start < 5.0
    assert final[-1]["role"] == "assistant"
    assert most[0] == 1


@pytest.mark.slow
def test_soak_200_mixed_requests_with_20_disconnects(long_server, tiny_session):
    chat_server, url = long_server
    before = dict(chat_server.counts)
    never_ending = _never_ending(tiny_session)
    budget_s = 600.0

    def one(i: int) -> str:
        kind = i % 10
        if kind == 0:
            return "left" if _read_then_leave(url, never_ending, pieces=2) == 2 else "short"
        if kind == 1:
            r = httpx.post(f"{url}/v1/chat/completions", json={"messages": HELLO, "n": 50}, timeout=budget_s)  # above --max-n
            return str(r.status_code)
        body = {"messages": [{"role": "user", "content": f"Request {i}: say hi"}], "max_tokens": 3,
                "presence_penalty": 0.5, "min_p": 0.05, "stream": kind in (2, 3, 4)}
        if body["stream"]:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=budget_s) as r:
                last = [line for line in r.iter_lines() if line][-1]
            return "200" if r.status_code == 200 and last == "data: [DONE]" else f"bad stream {r.status_code}"
        return str(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=budget_s).status_code)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(one, range(200), timeout=budget_s))
    assert outcomes.count("left") == 20 and outcomes.count("400") == 20 and outcomes.count("200") == 160, outcomes
    assert _wait_for(lambda: chat_server.health()["running"] == 0)
    after = chat_server.counts
    gone = (after["cancelled"] - before["cancelled"]) + (after["never_started"] - before["never_started"])
    assert gone == 20  # every gone client's generation stopped or never started
    assert after["finished"] - before["finished"] == 160 and after["failed"] == before["failed"]
    assert all(tokens < LONG for tokens in list(chat_server.cancelled_tokens)[-20:])
    assert httpx.post(f"{url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}, timeout=60).status_code == 200
    print(f"soak: 200 requests in {time.monotonic() - start:.1f} s; stopped after "
          f"{sorted(list(chat_server.cancelled_tokens)[-20:])} tokens")

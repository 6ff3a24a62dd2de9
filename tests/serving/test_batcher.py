"""Concurrent requests share forward passes (continuous batching): the replies are the ones
each request gets alone, each keeps its own sampling, seed, stop strings and cancellation, a
short request arriving mid-way is not held behind a long one, and the queue limit holds."""

from __future__ import annotations

import json
import time

import pytest

from tifa_lite.serving.requests import BadRequest

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


@pytest.fixture(scope="module")
def servers(tiny_session):
    from tifa_lite.serving.openai_api import ChatServer

    batched = ChatServer(tiny_session, "tiny", context_length=512, max_batch=4)
    alone = ChatServer(tiny_session, "tiny", context_length=512, batching=False)  # generate(), one at a time
    assert batched.batcher is not None and alone.batcher is None
    return batched, alone


def _job(server, i: int, **extra):
    body = {"messages": [{"role": "user", "content": f"Request {i}:" + " more" * (3 * i)}],
            "max_tokens": 6 + i % 3, "repetition_penalty": 1.3, "frequency_penalty": 1.0, **extra}
    _, job = server.prepare(json.dumps(body).encode())
    sink = server.sink(job)
    return job, sink


def _tokens(server, jobs):
    futures = [(server.submit(job, sink), sink) for job, sink in jobs]
    return [(f.result(timeout=60), [r.tokens for r in sink.rows]) for f, sink in futures]


def test_batched_replies_are_the_ones_generate_gives_alone(servers, tiny_session):
    batched, alone = servers
    calls = {"n": 0}
    real = tiny_session.model.forward

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    tiny_session.model.forward = counted
    try:
        together = _tokens(batched, [_job(batched, i) for i in range(6)])  # 6 requests, 4 rows: two wait
    finally:
        del tiny_session.model.forward
    one_by_one = [_tokens(alone, [_job(alone, i)])[0] for i in range(6)]
    assert [t for _, t in together] == [t for _, t in one_by_one]
    assert [[c.text for c in choices] for choices, _ in together] == [[c.text for c in choices] for choices, _ in one_by_one]
    generated = sum(len(row) for _, rows in together for row in rows)
    assert calls["n"] < generated  # steps were shared, not one forward per token per request


def test_each_request_keeps_its_seed_stop_and_sampling(servers):
    batched, _ = servers
    sampled = dict(temperature=1.0, top_k=50, top_p=0.9, min_p=0.02)
    specs = [dict(seed=1, **sampled), dict(seed=2, stop=["e"], **sampled), dict(temperature=0), dict(seed=3, n=2, **sampled)]
    alone = [_tokens(batched, [_job(batched, i, **spec)])[0] for i, spec in enumerate(specs)]  # through the batcher, alone
    together = _tokens(batched, [_job(batched, i, **spec) for i, spec in enumerate(specs)])
    assert [t for _, t in together] == [t for _, t in alone]
    assert [[(c.text, c.finish_reason) for c in ch] for ch, _ in together] == \
        [[(c.text, c.finish_reason) for c in ch] for ch, _ in alone]
    assert "e" not in together[1][0][0].text


def test_a_short_request_is_not_held_behind_a_long_one(servers, tiny_session):
    from tifa_lite.conversation.template_structure import end_of_turn_ids

    batched, _ = servers
    never_ending = {str(i): -100 for i in end_of_turn_ids(tiny_session.tokenizer, tiny_session.model.generation_config.eos_token_id)}
    long_job, long_sink = _job(batched, 0, max_tokens=400, logit_bias=never_ending)
    long_future = batched.submit(long_job, long_sink)
    while not long_sink.rows[0].tokens:
        time.sleep(0.01)
    short_job, short_sink = _job(batched, 1, max_tokens=3)
    short = batched.submit(short_job, short_sink).result(timeout=60)
    assert short[0].completion_tokens == 3
    assert not long_future.done(), "the short request waited for the long one"
    long_job.cancel.set()  # and cancelling the long one ends it at the next step
    assert long_future.result(timeout=30)[0].finish_reason == "cancelled"
    assert len(long_sink.rows[0].tokens) < 400


def test_queue_limit_is_a_503(tiny_session):
    from tifa_lite.conversation.template_structure import end_of_turn_ids
    from tifa_lite.serving.openai_api import ChatServer

    server = ChatServer(tiny_session, "tiny", context_length=512, max_batch=1, max_queue=1)
    never_ending = {str(i): -100 for i in end_of_turn_ids(tiny_session.tokenizer, tiny_session.model.generation_config.eos_token_id)}
    job, sink = _job(server, 0, max_tokens=400, logit_bias=never_ending)
    running = server.submit(job, sink)
    with pytest.raises(BadRequest) as full:
        server.submit(*_job(server, 1))
    assert full.value.status == 503 and "--max-queue" in full.value.message
    job.cancel.set()
    running.result(timeout=30)
    assert server.generate(*_job(server, 2))[0].completion_tokens > 0  # room again

"""What role-play front ends send: their request bodies replayed (tests/serving/frontend_requests.py),
every row of issue 25's table answered 200 or the documented 400, and the fields honoured
(penalties, min_p, logit_bias, developer, name) checked for their effect, not only accepted."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tests.serving.frontend_requests import FRONTEND_REQUESTS, HELLO, TABLE_ROWS_OK

httpx = pytest.importorskip("httpx")


def _post(url: str, body: dict):
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def _events(url: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


@pytest.mark.parametrize("name", sorted(FRONTEND_REQUESTS))
def test_front_end_request_is_answered(wide_server, name):
    _, url = wide_server
    body = FRONTEND_REQUESTS[name]
    if body["stream"]:
        events = _events(url, body)
        assert all("error" not in e for e in events)
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
        assert finishes in (["stop"], ["length"])
        if body.get("stream_options", {}).get("include_usage"):
            assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] <= 8
    else:
        r = _post(url, body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["object"] == "chat.completion" and isinstance(answer["choices"][0]["message"]["content"], str)
        assert answer["usage"]["completion_tokens"] <= 8  # the server's --max-tokens-cap, not the client's 200


@pytest.mark.parametrize("row", sorted(TABLE_ROWS_OK))
def test_table_row_answers_200(wide_server, row):
    _, url = wide_server
    body = {"messages": HELLO, "max_tokens": 3, **TABLE_ROWS_OK[row]}
    if body.get("stream"):
        assert _events(url, body)[-1]["usage"]["completion_tokens"] <= 3
    else:
        r = _post(url, body)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= 3


def test_openai_client_sends_front_end_fields(wide_server):
    openai = pytest.importorskip("openai", reason="the test extra brings the openai client: pip install -e '.[test]'")
    _, url = wide_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    common = dict(model="tiny", messages=[{"role": "developer", "content": "Be brief."}, *HELLO], max_tokens=4,
                  presence_penalty=0.7, frequency_penalty=0.7, logit_bias={}, seed=3, logprobs=False,
                  extra_body={"min_p": 0.05, "top_k": 20})
    whole = client.chat.completions.create(**common)
    chunks = list(client.chat.completions.create(**common, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_developer_turn_is_a_system_turn(wide_server):
    chat_server, url = wide_server
    as_developer = _post(url, {"messages": [{"role": "developer", "content": "Be brief."}, *HELLO], "max_tokens": 4})
    as_system = _post(url, {"messages": [{"role": "system", "content": "Be brief."}, *HELLO], "max_tokens": 4})
    assert as_developer.json()["usage"] == as_system.json()["usage"]
    assert as_developer.json()["choices"][0]["message"] == as_system.json()["choices"][0]["message"]


def test_names_are_written_where_the_template_drops_them(tiny_session):
    from tifa_lite.serving.openai_api import ChatServer
    from tifa_lite.serving.requests import ChatRequest, template_renders_names

    server = ChatServer(tiny_session, "tiny")
    assert not server.names_in_template  # SmolLM2's ChatML template has no `name`
    turns = server.conversation(ChatRequest.model_validate(
        {"messages": [{"role": "user", "name": "Cloud", "content": "Hi"}, {"role": "user", "content": "Yo"}]}))
    assert turns == [{"role": "user", "content": "Cloud: Hi"}, {"role": "user", "content": "Yo"}]
    assert template_renders_names("{{ message['name'] }}: {{ message.content }}")
    assert template_renders_names("{% if message.name %}{{ message.name }}{% endif %}")
    server.names_in_template = True
    kept = server.conversation(ChatRequest.model_validate({"messages": [{"role": "user", "name": "Cloud", "content": "Hi"}]}))
    assert kept == [{"role": "user", "content": "Hi", "name": "Cloud"}]


def test_ignored_fields_are_logged_once(tiny_session, caplog):
    from tifa_lite.serving.openai_api import ChatServer

    server = ChatServer(tiny_session, "tiny")
    body = json.dumps({"messages": HELLO, "reasoning_effort": "low", "cache_prompt": True, "tools": []}).encode()
    with caplog.at_level(logging.INFO, logger="tifa_lite.serving.openai_api"):
        server.prepare(body)
        server.prepare(body)
    ignored = [r.getMessage() for r in caplog.records if "accepted and ignored" in r.getMessage()]
    assert sorted(ignored) == sorted(f"request field {f!r} accepted and ignored: it cannot change the reply here"
                                     for f in ("cache_prompt", "reasoning_effort", "tools"))


def test_max_tokens_above_the_cap_is_lowered(tiny_session):
    from tifa_lite.serving.openai_api import ChatServer

    server = ChatServer(tiny_session, "tiny", max_tokens_cap=5)
    _, job = server.prepare(json.dumps({"messages": HELLO, "max_tokens": 4000}).encode())
    assert job.kwargs["max_new_tokens"] == 5
    _, job = server.prepare(json.dumps({"messages": HELLO, "max_completion_tokens": 3}).encode())
    assert job.kwargs["max_new_tokens"] == 3


def test_body_over_the_limit_is_a_413(tiny_session):
    from tests.serving.conftest import _run
    from tifa_lite.serving.openai_api import ChatServer

    for url in _run(ChatServer(tiny_session, "tiny", max_body_bytes=2_000)):
        big = {"messages": [{"role": "user", "content": "x" * 3_000}]}
        r = _post(url, big)
        assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]
        # sent without a Content-Length (chunked), refused while reading
        chunked = httpx.post(f"{url}/v1/chat/completions", content=iter([json.dumps(big).encode()]), timeout=30)
        assert chunked.status_code == 413
        assert _post(url, {"messages": HELLO, "max_tokens": 2}).status_code == 200


# --- the fields honoured change the reply the way their definitions say ---------------------

def test_openai_penalties_subtract_counts_of_generated_tokens_only():
    from tifa_lite.conversation.logits import OpenAIPenalties

    prompt = [5, 5, 5]  # repeated in the prompt: not penalised
    generated = [1, 2, 2]
    ids = torch.tensor([prompt + generated])
    scores = torch.zeros(1, 8)
    out = OpenAIPenalties(prompt_len=3, presence_penalty=0.5, frequency_penalty=0.25)(ids, scores.clone())
    expected = torch.zeros(1, 8)
    expected[0, 1] = -(1 * 0.25 + 0.5)
    expected[0, 2] = -(2 * 0.25 + 0.5)
    assert torch.equal(out, expected)


def test_logit_bias_forces_and_bans_tokens(tiny_session):
    greedy = tiny_session.reply(HELLO, max_new_tokens=1, do_sample=False)
    first = tiny_session.tokenizer.encode(greedy.text, add_special_tokens=False)[0] if greedy.text else None
    target = tiny_session.tokenizer.encode("Midgar", add_special_tokens=False)[0]
    forced = tiny_session.reply(HELLO, max_new_tokens=1, do_sample=False, logit_bias={str(target): 100})
    assert forced.text == tiny_session.tokenizer.decode([target]).strip() != greedy.text
    if first is not None:
        banned = tiny_session.reply(HELLO, max_new_tokens=1, do_sample=False, logit_bias={str(first): -100})
        assert banned.text != greedy.text


def test_min_p_one_keeps_only_the_top_token(tiny_session):
    greedy = tiny_session.reply(HELLO, max_new_tokens=5, do_sample=False)
    sampled = [tiny_session.reply(HELLO, max_new_tokens=5, do_sample=True, temperature=1.0, min_p=1.0, seed=s).text
               for s in (1, 2)]
    assert sampled == [greedy.text, greedy.text]


def test_frequency_penalty_changes_a_repetitive_greedy_reply(tiny_session):
    plain = tiny_session.reply(HELLO, max_new_tokens=24, do_sample=False)
    ids = tiny_session.tokenizer.encode(plain.text, add_special_tokens=False)
    penalised = tiny_session.reply(HELLO, max_new_tokens=24, do_sample=False, frequency_penalty=2.0,
                                   presence_penalty=2.0)
    pen_ids = tiny_session.tokenizer.encode(penalised.text, add_special_tokens=False)
    # a random tiny model repeats itself; OpenAI's penalties make repeats rarer
    assert len(set(pen_ids)) / max(len(pen_ids), 1) > len(set(ids)) / max(len(ids), 1)


def test_a_clients_temperature_samples_even_on_a_greedy_server(tiny_session):
    from tifa_lite.serving.openai_api import ChatServer

    server = ChatServer(tiny_session, "tiny")  # the fixture's session is greedy
    _, job = server.prepare(json.dumps({"messages": HELLO, "temperature": 0.8, "min_p": 0.05}).encode())
    assert job.kwargs["do_sample"] is True and job.kwargs["min_p"] == 0.05
    _, job = server.prepare(json.dumps({"messages": HELLO, "temperature": 0}).encode())
    assert job.kwargs["do_sample"] is False
    _, job = server.prepare(json.dumps({"messages": HELLO}).encode())
    assert "do_sample" not in job.kwargs  # the server's own default applies


# --- Open WebUI's Ollama-style parameters -----------------------------------------------------

def test_ollama_parameters_are_mapped_not_ignored(tiny_session, caplog):
    from tifa_lite.conversation.logits import WindowedRepetitionPenalty
    from tifa_lite.serving.openai_api import ChatServer

    server = ChatServer(tiny_session, "tiny", max_tokens_cap=50)
    body = {"messages": HELLO, "temperature": 0.7, "repeat_penalty": 1.3, "num_predict": 7, "typical_p": 0.5}
    with caplog.at_level(logging.INFO, logger="tifa_lite.serving.openai_api"):
        _, job = server.prepare(json.dumps(body).encode())
    assert (job.kwargs["repetition_penalty"], job.kwargs["max_new_tokens"], job.kwargs["typical_p"]) == (1.3, 7, 0.5)
    assert not [r for r in caplog.records if "accepted and ignored" in r.getMessage()]
    _, job = server.prepare(json.dumps({**body, "num_predict": -1}).encode())
    assert job.kwargs["max_new_tokens"] == 50  # Ollama's "no limit" is the server's cap
    _, job = server.prepare(json.dumps({**body, "repeat_last_n": 16}).encode())
    assert job.kwargs["repetition_penalty"] == 1.0  # applied by the windowed processor instead
    [windowed] = job.processors
    assert isinstance(windowed, WindowedRepetitionPenalty) and (windowed.penalty, windowed.window) == (1.3, 16)
    _, job = server.prepare(json.dumps({**body, "repeat_last_n": 0}).encode())
    assert job.kwargs["repetition_penalty"] == 1.0 and job.processors == ()  # 0: off, as in Ollama


def test_windowed_repetition_penalty_looks_at_the_last_tokens_only():
    from tifa_lite.conversation.logits import WindowedRepetitionPenalty

    ids = torch.tensor([[1, 2, 3, 4]])
    scores = torch.tensor([[2.0, 2.0, 2.0, -2.0, 2.0]])
    out = WindowedRepetitionPenalty(2.0, window=2)(ids, scores.clone())
    assert out.tolist() == [[2.0, 2.0, 2.0, -4.0, 1.0]]  # tokens 3 and 4 only; 1 and 2 are out of the window


def test_repeat_penalty_changes_the_reply(wide_server):
    _, url = wide_server
    plain = _post(url, {"messages": HELLO, "max_tokens": 8, "temperature": 0}).json()
    penalised = _post(url, {"messages": HELLO, "max_tokens": 8, "temperature": 0, "repeat_penalty": 50.0,
                            "repeat_last_n": 64, "num_predict": 8}).json()
    assert penalised["choices"][0]["message"]["content"] != plain["choices"][0]["message"]["content"]


def test_models_metadata_lists_what_is_ignored_and_mapped(wide_server):
    from tifa_lite.serving.requests import OLLAMA_IGNORED

    _, url = wide_server
    [model] = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    meta = model["meta"]
    assert {"mirostat", "num_ctx", "tfs_z", "tools", "reasoning_effort"} <= set(meta["ignored_parameters"])
    assert set(OLLAMA_IGNORED) <= set(meta["ignored_parameters"])
    assert set(meta["mapped_parameters"]) == {"repeat_penalty", "repeat_last_n", "num_predict", "typical_p"}
    assert meta["max_n"] == 4 and meta["max_tokens_cap"] == 8


# --- SillyTavern's example dialogue -------------------------------------------------------------

def test_example_dialogue_becomes_the_cards_turns(tiny_session):
    from tests.serving.frontend_requests import SILLYTAVERN_CHAT
    from tifa_lite.serving.openai_api import ChatServer
    from tifa_lite.serving.requests import ChatRequest

    server = ChatServer(tiny_session, "tiny")
    named = ChatRequest.model_validate({**SILLYTAVERN_CHAT, "user_name": "Cloud", "char_name": "Tifa"})
    turns = server.conversation(named)
    assert turns[2] == {"role": "user", "content": "Cloud: Do you serve anything without alcohol?"}
    assert turns[3] == {"role": "assistant", "content": "Tifa: *slides a glass over* Sure, try this one."}
    prompt = tiny_session.tokenizer.apply_chat_template(turns, tokenize=False)
    assert "example_user" not in prompt and "example_assistant" not in prompt
    # without the card's names: the example turns are spoken by nobody in particular
    plain = server.conversation(ChatRequest.model_validate(SILLYTAVERN_CHAT))
    assert plain[2] == {"role": "user", "content": "Do you serve anything without alcohol?"}
    assert plain[3]["role"] == "assistant" and "example" not in json.dumps(plain)
    # a template that renders names gets them as `name`, the card's
    server.names_in_template = True
    kept = server.conversation(named)
    assert kept[3] == {"role": "assistant", "content": "*slides a glass over* Sure, try this one.", "name": "Tifa"}


def test_example_names_come_from_the_conversation_when_not_sent(tiny_session):
    from tifa_lite.serving.openai_api import ChatServer
    from tifa_lite.serving.requests import ChatRequest

    server = ChatServer(tiny_session, "tiny")
    turns = server.conversation(ChatRequest.model_validate({"messages": [
        {"role": "system", "name": "example_assistant", "content": "*waves*"},
        {"role": "assistant", "name": "Barret", "content": "Yo."},
        {"role": "user", "name": "Cloud", "content": "Hi"}]}))
    assert turns[0] == {"role": "assistant", "content": "Barret: *waves*"}

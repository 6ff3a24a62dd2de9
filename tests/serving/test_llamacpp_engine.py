"""`serve --engine llama.cpp` for real (opt-in group `llamacpp`): the embedded model's GGUF in
llama-cpp-python's server behind our request rules, answering the front-end fixtures, the
issue's table, the openai client, and refusing what our server refuses."""

from __future__ import annotations

import json

import pytest

from tests.serving.frontend_requests import FRONTEND_REQUESTS, HELLO, TABLE_ROWS_OK

pytestmark = pytest.mark.llamacpp
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def llamacpp_url(request):
    request.getfixturevalue("llama_cpp_server")  # opt-in and installed, or skipped with the reason
    from tests.serving.conftest import _serve_asgi
    from tifa_lite.serving import llamacpp_engine
    from tifa_lite.serving.engines import engine_spec

    spec = engine_spec("smollm2-135m-instruct", None, "tifa", preset="greedy", max_tokens_cap=16,
                       system="You are Tifa Lockhart, a friendly bartender in Midgar.")
    app = llamacpp_engine.build_app(spec, llamacpp_engine.gguf_for("smollm2-135m-instruct", None), n_ctx=2048)
    for url in _serve_asgi(app):
        yield url


def _answer(url: str, body: dict) -> tuple[int, str]:
    if not body.get("stream"):
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        return r.status_code, (r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text)
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]", lines[-3:]
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    return r.status_code, "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


@pytest.mark.parametrize("name", sorted(FRONTEND_REQUESTS))
def test_front_end_requests_are_answered_by_llama_cpp(llamacpp_url, name):
    status, text = _answer(llamacpp_url, FRONTEND_REQUESTS[name])
    assert status == 200 and text.strip(), text


@pytest.mark.parametrize("row", sorted(TABLE_ROWS_OK))
def test_table_rows_answer_200_in_llama_cpp(llamacpp_url, row):
    status, text = _answer(llamacpp_url, {"messages": HELLO, "max_tokens": 4, **TABLE_ROWS_OK[row]})
    assert status == 200, text


def test_refusals_are_ours(llamacpp_url):
    r = httpx.post(f"{llamacpp_url}/v1/chat/completions", json={"messages": HELLO, "n": 2}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_openai_client_and_greedy_defaults(llamacpp_url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{llamacpp_url}/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["tifa"]
    # no sampling sent: the recipe's (greedy here) applies, so two answers are the same
    a = client.chat.completions.create(model="tifa", messages=HELLO)
    b = client.chat.completions.create(model="tifa", messages=HELLO)
    assert a.choices[0].message.content == b.choices[0].message.content and a.usage.completion_tokens <= 16
    chunks = list(client.chat.completions.create(model="tifa", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == a.choices[0].message.content.strip()


# ---- many characters on the one base GGUF: llama.cpp's LoRA files, chosen per request ------

PROMPT = "<|im_start|>user\nWho are you, stranger?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def cast(request, embedded_model_dir, tmp_path_factory):
    request.getfixturevalue("llama_cpp_server")
    from tests.export.test_llamacpp_lora import make_adapter
    from tifa_lite.export.llamacpp_lora import cached_lora_gguf

    root = tmp_path_factory.mktemp("cast")
    folders = {"tong": make_adapter(embedded_model_dir, root / "tong", seed=1, b_scale=0.3),
               "hermione": make_adapter(embedded_model_dir, root / "hermione", seed=2, b_scale=0.3)}
    (folders["tong"] / "tifa_sampling.json").write_text(json.dumps({"do_sample": False}))
    (folders["hermione"] / "tifa_sampling.json").write_text(json.dumps({"do_sample": False, "repetition_penalty": 1.3}))
    return {name: (folder, cached_lora_gguf(folder, base=embedded_model_dir)) for name, folder in folders.items()}


@pytest.fixture(scope="module")
def cast_url(cast):
    from tests.serving.conftest import _serve_asgi
    from tifa_lite.serving import llamacpp_engine
    from tifa_lite.serving.engines import character_spec, engine_spec

    spec = engine_spec("smollm2-135m-instruct", None, "base", preset="greedy", max_tokens_cap=12)
    characters = {name: (character_spec(spec, name, folder), lora) for name, (folder, lora) in cast.items()}
    app = llamacpp_engine.build_app(spec, llamacpp_engine.gguf_for("smollm2-135m-instruct", None), n_ctx=1024,
                                    characters=characters)
    for url in _serve_asgi(app):
        yield url


def _complete(url: str, model: str) -> str:
    r = httpx.post(f"{url}/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": 12}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_each_character_answers_with_its_own_adapter_on_one_base(cast_url, cast):
    import llama_cpp

    from tifa_lite.serving.llamacpp_engine import gguf_for

    assert [m["id"] for m in httpx.get(f"{cast_url}/v1/models", timeout=30).json()["data"]] == ["base", "tong", "hermione"]
    # back and forth: a switch must not reuse the other character's cached prompt
    order = ["base", "tong", "hermione", "tong", "base", "hermione", "tong"]
    answers = [(model, _complete(cast_url, model)) for model in order]
    by_model = {}
    for model, text in answers:
        by_model.setdefault(model, set()).add(text)
    assert all(len(texts) == 1 for texts in by_model.values()), by_model
    assert len({next(iter(t)) for t in by_model.values()}) == 3, by_model  # three different characters
    # the served character equals llama.cpp with that one LoRA loaded at start (greedy, its penalty)
    for name, penalty in (("tong", 1.0), ("hermione", 1.3)):
        llm = llama_cpp.Llama(model_path=str(gguf_for("smollm2-135m-instruct", None)), lora_path=str(cast[name][1]),
                              n_ctx=1024, verbose=False)
        direct = llm.create_completion(PROMPT, max_tokens=12, temperature=0.0, repeat_penalty=penalty, top_k=0,
                                       top_p=1.0, min_p=0.0)["choices"][0]["text"]
        llm.close()
        assert by_model[name] == {direct}, (name, by_model[name], direct)

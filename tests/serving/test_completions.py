"""``/v1/completions`` (SillyTavern's Text Completion → Generic OpenAI-compatible, the
``openai`` client's ``completions.create``): the prompt as sent, no chat template; stream and
not, stop, seed, penalties, max_tokens, usage, finish_reason — in our server and in front of
the llama.cpp engine."""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")

# A client-side instruct template, as SillyTavern renders it (ChatML here).
PROMPT = "<|im_start|>system\nYou are Aria.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nAria:"


def _post(url: str, body: dict):
    return httpx.post(f"{url}/v1/completions", json=body, timeout=60)


def test_completion_is_the_prompt_continued_without_a_chat_template(live_server, tiny_session):
    _, url = live_server
    r = _post(url, {"model": "tiny", "prompt": PROMPT, "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == "tiny"
    choice = body["choices"][0]
    # the prompt is tokenised as sent: no chat template around it
    prompt_ids = tiny_session.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    assert body["usage"]["prompt_tokens"] == prompt_ids.shape[1]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    # greedy continuation of exactly these ids, text as generated (not stripped)
    output, _ = tiny_session.generate_tokens({"input_ids": prompt_ids, "attention_mask": prompt_ids * 0 + 1},
                                             max_new_tokens=6, do_sample=False)
    expected = tiny_session.tokenizer.decode(output[0, prompt_ids.shape[1]:], skip_special_tokens=True,
                                             clean_up_tokenization_spaces=False)
    assert choice["text"] == expected and choice["index"] == 0
    assert choice["finish_reason"] in ("stop", "length") and body["usage"]["completion_tokens"] <= 6


def test_openai_client_completions_stream_and_not(live_server):
    openai = pytest.importorskip("openai", reason="the test extra brings the openai client: pip install -e '.[test]'")
    _, url = live_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    common = dict(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0.9, seed=7, presence_penalty=0.5,
                  frequency_penalty=0.5, stop=["\n"], extra_body={"min_p": 0.05, "repetition_penalty": 1.1})
    whole = client.completions.create(**common)
    chunks = list(client.completions.create(**common, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert "\n" not in whole.choices[0].text


def test_completion_stops_and_reports_length(live_server):
    _, url = live_server
    free = _post(url, {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}).json()["choices"][0]
    assert free["finish_reason"] == "length"
    stop = free["text"][3:6]
    cut = _post(url, {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "stop": stop}).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["text"] == free["text"][: free["text"].find(stop)]


@pytest.mark.parametrize("body,param", [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": "x", "echo": True}, "echo"),
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": "x", "n": 9}, "n"),
    ({"prompt": "word " * 400}, "prompt"),  # over the 256-token context
])
def test_bad_completion_request_is_a_400_naming_the_field(live_server, body, param):
    _, url = live_server
    r = _post(url, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_completions_reach_the_llama_cpp_engine_with_our_defaults(tiny_model_dir):
    """The llama.cpp engine's own /v1/completions, behind our rules (the app stands in for
    llama-cpp-python's, which the opt-in group runs for real)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from tifa_lite.serving.engines import NormalisedRequests, engine_spec

    spec = engine_spec(str(tiny_model_dir), None, "tiny", preset="tifa", max_tokens_cap=64)
    seen = []

    async def downstream(request):
        seen.append(await request.json())
        return JSONResponse({"ok": True})

    app = NormalisedRequests(Starlette(routes=[Route("/v1/completions", downstream, methods=["POST"])]), spec,
                             penalty_key="repeat_penalty")
    with TestClient(app) as client:
        ok = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 500, "stop": ["\nKai:"],
                                                  "logprobs": 2, "repeat_penalty": 1.3})
        assert ok.status_code == 200
        assert seen[-1]["prompt"] == PROMPT and seen[-1]["max_tokens"] == 64 and seen[-1]["stop"] == ["\nKai:"]
        assert (seen[-1]["temperature"], seen[-1]["repeat_penalty"], seen[-1]["logprobs"]) == (0.4, 1.3, 2)
        refused = client.post("/v1/completions", json={"prompt": PROMPT, "echo": True})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "echo" and len(seen) == 1


"""chat(): sampling precedence, <think> stripping in what is sent back, adapters, CLI --once."""

from __future__ import annotations

import json

import pytest
import yaml

from tifa_lite.conversation.session import SAMPLING_PRESETS, chat, generation_kwargs, resolve_sampling
from tifa_lite.cli import main
from tifa_lite.errors import ConfigError


def test_sampling_precedence(tmp_path):
    model_dir = tmp_path / "model"
    adapter_dir = tmp_path / "adapter"
    model_dir.mkdir()
    adapter_dir.mkdir()
    (model_dir / "generation_config.json").write_text(json.dumps({"temperature": 0.3, "top_p": 0.5, "eos_token_id": 2}))
    assert resolve_sampling(model_dir)["temperature"] == 0.3
    (adapter_dir / "tifa_sampling.json").write_text(json.dumps({"temperature": 0.4, "repetition_penalty": 1.17}))
    got = resolve_sampling(model_dir, adapter_dir)
    assert (got["temperature"], got["top_p"], got["repetition_penalty"]) == (0.4, 0.5, 1.17)
    assert "eos_token_id" not in got
    assert resolve_sampling(model_dir, adapter_dir, preset="tifa") | {} == {**got, **SAMPLING_PRESETS["tifa"]}
    assert resolve_sampling(model_dir, preset="tifa", max_new_tokens=8, top_k=None)["max_new_tokens"] == 8
    with pytest.raises(ConfigError, match="unknown; choose one of tifa, greedy"):
        resolve_sampling(model_dir, preset="tfa")


def test_recipe_sampling_section(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"sampling": {"temperature": 0.4, "top_p": 0.6, "repetition_penalty": 1.17, "max_new_tokens": 1536}}))
    got = resolve_sampling(tmp_path, recipe=recipe)
    assert {k: got[k] for k in ("temperature", "top_p", "repetition_penalty", "max_new_tokens")} == {
        "temperature": 0.4, "top_p": 0.6, "repetition_penalty": 1.17, "max_new_tokens": 1536
    }


def test_generation_kwargs_greedy_drops_sampling_keys():
    assert generation_kwargs({"temperature": 0, "top_p": 0.6, "max_new_tokens": 4}) == {"do_sample": False, "max_new_tokens": 4}
    assert generation_kwargs({"temperature": 0.4, "top_k": None})["do_sample"] is True


def test_say_strips_think_from_history_sent_back(tiny_model_dir):
    session = chat(str(tiny_model_dir), system="You are Sheldon.", do_sample=False, max_new_tokens=4)
    sent = []
    original = session.tokenizer.apply_chat_template

    def spy(messages, **kw):
        sent.append([dict(m) for m in messages])
        return original(messages, **kw)

    session.tokenizer.apply_chat_template = spy
    session.history = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>two and two</think>\n4"},
    ]
    reply = session.say("And 3+3?")
    assert isinstance(reply, str)
    assert sent[0] == [
        {"role": "system", "content": "You are Sheldon."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    # The session keeps the full reply; only what goes to the model is stripped.
    assert session.history[1]["content"].startswith("<think>")
    assert session.history[-2:] == [{"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": reply}]
    # Greedy is deterministic: same history, same reply.
    session.history = session.history[:2]
    assert session.say("And 3+3?") == reply
    keep = chat(str(tiny_model_dir), think_policy="keep", do_sample=False, max_new_tokens=2)
    keep.history = session.history[:2]
    assert keep.messages_for_model("x")[1]["content"].startswith("<think>")


def test_reply_after_a_think_opening_generation_prompt_is_stored_whole(tiny_model_dir):
    """deepseek_r1's generation prompt opens "<think>\\n": the stored reply gets it back, so the
    think policy finds the whole block when the reply becomes history."""
    session = chat(str(tiny_model_dir), chat_template="deepseek_r1", do_sample=False, max_new_tokens=3)
    reply = session.say("2+2?")
    assert reply.startswith("<think>\n") and session.history[1]["content"] == reply
    plain = chat(str(tiny_model_dir), do_sample=False, max_new_tokens=3)
    assert not plain.say("2+2?").startswith("<think>")


def test_unknown_sampling_key(tiny_model_dir):
    with pytest.raises(ConfigError, match="unknown sampling keys"):
        chat(str(tiny_model_dir), temprature=0.4)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter laid out like a tifa_lite run (resolved_config.yaml, tifa_sampling.json, tokenizer)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    (out / "resolved_config.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": str(tiny_model_dir)}}))
    (out / "tifa_sampling.json").write_text(json.dumps({"temperature": 0.4, "top_p": 0.6, "repetition_penalty": 1.17, "max_new_tokens": 3}))
    return out


def test_adapter_base_from_run_and_sampling(tiny_adapter, tiny_model_dir):
    from peft import PeftModel

    session = chat(None, adapter=tiny_adapter, seed=0)
    assert isinstance(session.model, PeftModel)
    assert session.sampling["temperature"] == 0.4 and session.sampling["max_new_tokens"] == 3
    seen = {}
    generate = session.model.generate

    def spy(**kw):
        seen.update(kw)
        return generate(**kw)

    session.model.generate = spy
    session.say("Hello")
    assert (seen["temperature"], seen["top_p"], seen["repetition_penalty"], seen["max_new_tokens"]) == (0.4, 0.6, 1.17, 3)
    # The adapter changes the output distribution: it is really applied.
    import torch

    plain = chat(str(tiny_model_dir), do_sample=False)
    ids = plain.tokenizer("Hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(plain.model(ids).logits, session.model(ids).logits)


def test_not_an_adapter(tmp_path):
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        chat("smollm2-135m-instruct", adapter=tmp_path)


def test_cli_once_matches_api(tiny_model_dir, capsys):
    expected = chat(str(tiny_model_dir), preset="greedy", max_new_tokens=3).say("Hi")
    assert main(["chat", "--model", str(tiny_model_dir), "--once", "Hi", "--max-new-tokens", "3", "--preset", "greedy"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_cli_terminal_loop(tiny_model_dir, monkeypatch, capsys):
    typed = iter(["Hi", "", "/reset", "Hello", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    assert main(["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "2", "--preset", "greedy"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("bot> ") == 2
    assert "/reset clears the history" in captured.err


def test_package_chat_is_the_function_after_every_submodule_is_imported(tiny_model_dir):
    """Regression: a submodule named like a package-level function (``tifa_lite.train``,
    ``tifa_lite.chat``) replaces the function on the package once it is imported."""
    import importlib
    import pkgutil

    import tifa_lite
    from tifa_lite.conversation.session import ChatSession

    for info in pkgutil.walk_packages(tifa_lite.__path__, "tifa_lite."):
        if not info.name.endswith("__main__"):  # running main() is not importing
            importlib.import_module(info.name)
    for name in tifa_lite.__all__:
        assert not isinstance(getattr(tifa_lite, name), type(tifa_lite)), f"tifa_lite.{name} is shadowed by a submodule"
    session = tifa_lite.chat(str(tiny_model_dir), do_sample=False, max_new_tokens=2)
    assert isinstance(session, ChatSession)


def test_reply_is_stateless_and_reports_tokens_and_finish(tiny_model_dir):
    from tifa_lite.conversation.session import chat

    session = chat(str(tiny_model_dir), preset="greedy", max_new_tokens=4)
    messages = [{"role": "user", "content": "Hello"}]
    first = session.reply(messages)
    assert session.history == []
    assert first.completion_tokens <= 4 and first.prompt_tokens > 0
    assert first.finish_reason == ("length" if first.completion_tokens == 4 else "stop")
    assert session.reply(messages) == first
    assert session.say("Hello") == first.text


def test_reply_cuts_at_a_stop_string(tiny_model_dir):
    from tifa_lite.conversation.session import chat

    # Seeded sampling on the random tiny model: a reproducible reply with text in it (its greedy
    # reply is a special token, empty once decoded).
    session = chat(str(tiny_model_dir), max_new_tokens=12, temperature=1.0, do_sample=True, seed=0)
    full = session.reply([{"role": "user", "content": "Hello"}]).text
    assert len(full) >= 4, full
    stop = full[2:4]
    cut = session.reply([{"role": "user", "content": "Hello"}], stop=[stop])
    assert cut.finish_reason == "stop" and stop not in cut.text and full.startswith(cut.text)

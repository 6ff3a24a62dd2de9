"""Messages that used to name the wrong thing, or come too late: each now names the real
cause (two explicit keys in conflict, a malformed override, an empty recipe, a missing
file, keys of another method, a folder that does not exist), before any model loads."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from tests.bad_input.conftest import RECIPE, assert_refused, conversation
from tests.bad_input.test_before_load import model_load  # noqa: F401  (fixture)


def test_explicit_accumulation_against_the_global_batch_names_both_keys(cli, caplog):
    # The key typed on the command line wins over the recipe's, and says so naming both.
    outcome = cli("config", RECIPE, "train.gradient_accumulation_steps=4")
    assert outcome.code == 0, outcome.err
    assert ("train.gradient_accumulation_steps=4 (given as an override) replaces train.global_batch_size=16 (set by "
            f"the recipe {RECIPE}): the global batch is now 2 per device × 4 × world size 1 = 8.") in caplog.text
    assert "gradient_accumulation_steps: 4" in outcome.out
    # Two overrides that contradict each other are refused, naming both.
    both = cli("config", RECIPE, "train.gradient_accumulation_steps=4", "train.global_batch_size=16")
    assert_refused(both, "train.gradient_accumulation_steps=4 (given as an override) conflicts with "
                         "train.global_batch_size=16 (set by the override",
                   "Set train.global_batch_size=8, or train.global_batch_size=null")
    # Consistent, or with the global batch cleared, both are fine.
    assert cli("config", RECIPE, "train.gradient_accumulation_steps=4", "train.per_device_batch_size=4").code == 0
    assert cli("config", RECIPE, "train.gradient_accumulation_steps=4", "train.global_batch_size=null").code == 0


@pytest.mark.parametrize("override, what", [
    ("=3", "nothing before '='"), ("train..max_steps=3", "'train..max_steps' is not a dotted key"),
])
def test_malformed_override_is_called_malformed(cli, override, what):
    outcome = cli("config", RECIPE, override)
    assert_refused(outcome, f"override {override!r} is malformed ({what}")
    assert "unknown key" not in outcome.err


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_recipe_is_refused(cli, tmp_path, text):
    recipe = tmp_path / "empty.yaml"
    recipe.write_text(text)
    assert_refused(cli("config", recipe), f"{recipe}: the recipe is empty")


def test_duplicate_key_names_both_lines(cli, tmp_path):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text("train:\n  max_steps: 2\n  learning_rate: 1.0e-4\n  max_steps: 5\n")
    assert_refused(cli("config", recipe), f"{recipe}:4: the key 'max_steps' appears twice, on lines 2 and 4")
    # The same name in two sections is no duplicate.
    recipe.write_text("train:\n  seed: 1\ndata:\n  seed: 2\n")
    assert cli("config", recipe).code == 0


def test_missing_jinja_template_is_a_missing_file_before_the_load(cli, train_args, tmp_path, model_load):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(conversation()) + "\n")
    started = time.monotonic()
    outcome = cli(*train_args(data, model__chat_template=tmp_path / "chat.jinja"))
    assert time.monotonic() - started < 5
    assert_refused(outcome, f"model.chat_template={tmp_path / 'chat.jinja'}: no such file")
    assert "unknown template" not in outcome.err and model_load.calls == 0


@pytest.mark.parametrize("override, section", [("dpo.beta=0.5", "dpo"), ("grpo.num_generations=4", "grpo")])
def test_another_methods_keys_on_an_sft_run(cli, override, section):
    outcome = cli("config", RECIPE, override)
    assert_refused(outcome, f"override {override}: {section}.* is read by train.method=", "this run is train.method=sft")
    assert cli("config", RECIPE, override, f"train.method={section}").code == 0  # then it is read


@pytest.mark.parametrize("args", [
    ["merge", "--adapter", "{missing}", "--output", "{tmp}/merged"],
    ["export", "gguf", "--model", "{missing}", "--output", "{tmp}/m.gguf"],
    ["export", "ollama", "--model", "{missing}", "--output", "{tmp}/ollama"],
])
def test_merge_and_export_of_a_folder_that_does_not_exist(cli, tmp_path, args):
    missing = tmp_path / "no-such-run"
    outcome = cli(*[a.format(missing=missing, tmp=tmp_path) for a in args])
    assert_refused(outcome, f"{missing}: the folder does not exist")


@pytest.mark.parametrize("row, named", [
    ({"prompt": "What is 2+2?"}, "have no 'answer'"),
    ({"question": "What is 2+2?"}, "GSM8K row needs a non-empty string 'answer'"),
])
def test_grpo_rows_without_an_answer_are_refused_before_the_load(cli, train_args, tmp_path, model_load, row, named):
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps(row) + "\n")
    outcome = cli(*train_args(data, train__method="grpo", grpo__num_generations=2, data__format="auto"))
    assert_refused(outcome, named)
    assert model_load.calls == 0


def test_ten_rows_for_a_thousand_steps_warn_about_the_epochs(cli, train_args, tmp_path, model_load, caplog):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(conversation(f"q{i}", f"a{i}")) + "\n" for i in range(10)))
    with caplog.at_level(logging.WARNING):
        cli(*train_args(data, train__max_steps=1000))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("train.max_steps=1000 over 10 training row(s) at 2 row(s) per step is 200 epochs" in w for w in warnings), warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cli(*train_args(data, train__max_steps=20))
    assert not any("epochs" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_serve_on_a_port_in_use_says_so_before_the_model_loads(cli, tiny_model_dir, monkeypatch):
    from tifa_lite.cli import chat

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(chat, "session_from_args", no_load)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        outcome = cli("serve", "--model", tiny_model_dir, "--port", port)
    assert_refused(outcome, f"--port {port}: 127.0.0.1:{port} is already in use", "Choose another --port")
    assert "Errno" not in outcome.err


def test_a_lone_surrogate_gets_a_plain_400():
    from tifa_lite.serving.requests import BadRequest, parse_request

    with pytest.raises(BadRequest) as info:
        parse_request(b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}]}')
    assert info.value.status == 400
    assert "lone UTF-16 surrogate" in info.value.message
    assert "encode" not in info.value.message and "token" not in info.value.message


@pytest.mark.parametrize("option", ["--limit", "--batch-size"])
def test_eval_preference_ranges_are_checked_by_the_parser(cli, tmp_path, capsys, option):
    with pytest.raises(SystemExit) as info:
        cli("eval", "preference", "--model", tmp_path, "--data", tmp_path / "pairs.jsonl", option, "0")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: 0 is not a positive number" in err and "Traceback" not in err

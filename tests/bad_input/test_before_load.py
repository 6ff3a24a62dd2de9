"""What a run checks before its model loads: the data (with the tokenizer alone; a 7B load
takes minutes) and a schedule too short to take a step at a non-zero learning rate."""

from __future__ import annotations

import json
import logging

import pytest

from tests.bad_input.conftest import assert_refused, conversation, leftovers
from tifa_lite.errors import TifaError


class ModelLoadReached(TifaError):
    pass


@pytest.fixture
def model_load(monkeypatch):
    """Stops a run where its model would load; ``model_load.calls`` counts the attempts."""
    from tifa_lite import backends

    def stop(*args, **kwargs):
        stop.calls += 1
        raise ModelLoadReached("stopped where the model loads")

    stop.calls = 0
    monkeypatch.setattr(backends, "load_for_training_with_backend", stop)
    return stop


@pytest.mark.parametrize("method, good, bad", [
    ("sft", conversation(), {"messages": "not a list"}),
    ("cpt", {"text": "Once upon a time."}, {"body": "no text key"}),
    ("dpo", {"prompt": "hi", "chosen": "hello", "rejected": "go"}, {"prompt": "hi", "chosen": "x"}),
])
def test_a_data_error_is_reported_before_the_model_loads(cli, train_args, tmp_path, model_load, method, good, bad):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    extra = {}
    outcome = cli(*train_args(path, train__method=method, **extra))
    assert_refused(outcome, f"{path}:2")
    assert model_load.calls == 0, "the model was loaded before the data was checked"
    assert not (tmp_path / "run.partial").exists() and leftovers(tmp_path) == []


def test_good_data_is_built_once_not_again_after_the_load(train_args, tmp_path, monkeypatch):
    """The check builds the data with the tokenizer; the trainer reuses that build."""
    from tifa_lite import train
    from tifa_lite.data import build

    calls = []
    real = build.build_sft_data

    def counting(config, tokenizer):
        calls.append(1)
        return real(config, tokenizer)

    monkeypatch.setattr(build, "build_sft_data", counting)
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(conversation(f"q{i}", f"a{i}")) + "\n" for i in range(4)))
    args = train_args(path, train__max_steps=1, train__save_steps=100, quant__bits=None)
    result = train(args[1], overrides=args[2:])
    assert result.global_step == 1 and len(calls) == 1


def test_a_run_too_short_for_a_non_zero_step_says_so_before_the_load(cli, train_args, tmp_path, model_load, caplog):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(conversation()) + "\n")
    with caplog.at_level(logging.WARNING):
        outcome = cli(*train_args(path, train__max_steps=1, train__warmup_ratio=0.1))
    assert_refused(outcome, "stopped where the model loads")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("train.max_steps=1 with train.warmup_ratio=0.1" in w and "learning rate 0" in w
               and "Set train.warmup_ratio=0" in w for w in warnings), warnings


def test_one_epoch_of_one_batch_with_warmup_says_so_too(cli, train_args, tmp_path, model_load, caplog):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(conversation()) + "\n" + json.dumps(conversation("a", "b")) + "\n")
    with caplog.at_level(logging.WARNING):
        cli(*train_args(path, train__max_steps=-1, train__num_epochs=1, train__warmup_ratio=0.1))
    assert any("2 training row(s) make one optimizer step" in r.getMessage() for r in caplog.records)


def test_two_steps_with_warmup_say_nothing(cli, train_args, tmp_path, model_load, caplog):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(conversation()) + "\n")
    with caplog.at_level(logging.WARNING):
        cli(*train_args(path, train__max_steps=2, train__warmup_ratio=0.1))
    assert model_load.calls == 1
    assert not any("learning rate 0" in r.getMessage() for r in caplog.records)

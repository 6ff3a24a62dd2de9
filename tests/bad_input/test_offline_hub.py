"""A hub id with no hub (HF_HUB_OFFLINE=1, or no connection): one line in about a second,
with "did you mean" from local folders, the caches and the planner's table; a cached id
is used from the cache. Nothing here opens a connection: the probe is replaced."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.bad_input.conftest import RECIPE, assert_refused, conversation, run_cli

MISSPELT = "Qwen/Qwen2.5-7B-Instruc"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def unreachable(monkeypatch):
    """No HF_HUB_OFFLINE, but no connection either."""
    from tifa_lite import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "reachable", lambda host, port=443: False)


@pytest.fixture
def hf_cache(monkeypatch, tmp_path, tiny_model_dir):
    """An HF cache holding the tiny model as ``someone/tiny-llama``."""
    from tifa_lite import hub

    repo = tmp_path / "hub" / "models--someone--tiny-llama"
    commit = "0" * 40
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub, "hf_cache_dir", lambda: tmp_path / "hub")
    return repo / "snapshots" / commit


@pytest.mark.parametrize("network", ["offline", "unreachable"])
def test_plan_with_a_misspelt_id_is_fast_and_offers_the_right_one(cli, network, request):
    request.getfixturevalue(network)
    started = time.monotonic()
    outcome = cli("plan", RECIPE, f"model.name_or_path={MISSPELT}", "--gpu", "t4")
    assert time.monotonic() - started < 3
    why = "HF_HUB_OFFLINE is set" if network == "offline" else "no connection to huggingface.co"
    assert_refused(outcome, f"model.name_or_path={MISSPELT}: not a local folder", f"unreachable ({why})",
                   "Did you mean 'Qwen/Qwen2.5-7B-Instruct'")


def test_train_with_a_misspelt_id_offline_is_one_line_before_any_load(cli, offline, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(conversation()) + "\n")
    started = time.monotonic()
    outcome = cli("train", RECIPE, f"model.name_or_path={MISSPELT}", f"data.path={data}",
                  f"train.output_dir={tmp_path / 'run'}")
    assert time.monotonic() - started < 3
    assert_refused(outcome, "Hugging Face Hub is unreachable", "Did you mean 'Qwen/Qwen2.5-7B-Instruct'")
    assert not (tmp_path / "run.partial").exists()


def test_a_modelscope_id_offline_is_one_line_too(cli, unreachable, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    outcome = cli("train", RECIPE, "model.name_or_path=qwen/Qwen2.5-7B-Instruc", "model.source=modelscope",
                  f"train.output_dir={tmp_path / 'run'}")
    assert_refused(outcome, "ModelScope hub is unreachable (no connection to www.modelscope.cn)",
                   "Did you mean 'Qwen/Qwen2.5-7B-Instruct'")


@pytest.mark.parametrize("network", ["offline", "unreachable"])
def test_a_cached_id_without_a_hub_is_loaded_from_the_cache(network, request, hf_cache):
    """HF_HUB_OFFLINE: the libraries read their cache themselves, the id is kept; a hub that
    cannot be reached unannounced: the cached folder itself, so nothing retries."""
    from tifa_lite.config.schema import ModelConfig
    from tifa_lite.modeling.resolve import loadable_path, resolve_model

    request.getfixturevalue(network)
    cfg = ModelConfig(name_or_path="someone/tiny-llama")
    assert loadable_path(cfg, resolve_model(cfg)) == ("someone/tiny-llama" if network == "offline" else str(hf_cache))
    misspelt = ModelConfig(name_or_path="someone/tiny-lama")
    from tifa_lite.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'someone/tiny-llama'"):
        loadable_path(misspelt, resolve_model(misspelt))


def test_as_a_process_offline_no_retries_and_no_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    outcome = run_cli("plan", RECIPE, f"model.name_or_path={MISSPELT}", "--gpu", "t4", timeout=60)
    assert_refused(outcome, "Did you mean 'Qwen/Qwen2.5-7B-Instruct'")
    assert outcome.err.count("error:") == 1 and "Retrying" not in outcome.err, outcome.err


def test_an_id_the_hub_refuses_is_one_line_with_did_you_mean(monkeypatch):
    """The hub answers (the probe says so) and refuses the id: transformers' OSError becomes one line."""
    import transformers

    from tifa_lite import hub
    from tifa_lite.config import load_recipe
    from tifa_lite.errors import ConfigError
    from tifa_lite.modeling.load import load_tokenizer
    from tifa_lite.modeling.resolve import resolve_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "reachable", lambda host, port=443: True)

    def refuse(name, **kwargs):
        raise OSError(f"{name} is not a local folder and is not a valid model identifier listed on "
                      "'https://huggingface.co/models'\nIf this is a private repository, ...")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    config = load_recipe(RECIPE, {"model.name_or_path": MISSPELT})
    with pytest.raises(ConfigError) as info:
        load_tokenizer(config, resolve_model(config.model))
    message = str(info.value)
    assert message.startswith(f"model.name_or_path={MISSPELT}: not a local folder, and the Hugging Face Hub refused it")
    assert "Did you mean 'Qwen/Qwen2.5-7B-Instruct'" in message and "\n" not in message

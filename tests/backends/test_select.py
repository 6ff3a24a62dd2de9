"""Backend selection: ``auto`` is transformers (unsloth has not run for real here); an
explicit ``unsloth`` only when installed, recent enough, on a supported CUDA GPU, and when
the recipe needs nothing unsloth would change; otherwise transformers, with the reason."""

from __future__ import annotations

import importlib.abc
import logging
import sys

import pytest

from tifa_lite.backends import select
from tifa_lite.backends.select import select_backend
from tifa_lite.config import dump_config
from tifa_lite.config.schema import RecipeConfig
from tifa_lite.hardware import Hardware

from .conftest import CPU, T4


def recipe(**sections) -> RecipeConfig:
    return RecipeConfig.model_validate(sections)


class ImportSpy(importlib.abc.MetaPathFinder):
    """Records (and blocks) any attempt to import unsloth."""

    def __init__(self):
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        if name == "unsloth" or name.startswith("unsloth."):
            self.attempts.append(name)
            raise ImportError("unsloth must not be imported by selection")
        return None


def test_auto_never_picks_unsloth_even_where_it_could_run(gpu_capability, unsloth_stand_in, caplog):
    with caplog.at_level(logging.INFO, logger="tifa_lite.backends.select"):
        name, reason = select_backend(recipe(), T4)
    assert name == "transformers"
    assert "not been run for real" in reason and "model.backend=unsloth" in reason
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]


def test_explicit_unsloth_on_a_supported_gpu_when_installed(gpu_capability, unsloth_stand_in, caplog):
    name, reason = select_backend(recipe(model={"backend": "unsloth"}), T4)
    assert name == "unsloth"
    assert "Tesla T4" in reason
    assert "contract-tested, not run for real" in caplog.text


@pytest.mark.parametrize("installed, blocked", [("2024.12.4", True), ("2025.3.19", False), ("2026.1.2", False),
                                                 ("not-a-version", True)])
def test_explicit_unsloth_older_than_the_api_we_call_falls_back(gpu_capability, unsloth_stand_in, monkeypatch,
                                                                installed, blocked):
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed if name == "unsloth" else real(name))
    name, reason = select_backend(recipe(model={"backend": "unsloth"}), T4)
    assert (name == "transformers") is blocked
    if blocked:
        assert select.MIN_VERSION in reason


def test_unsloth_requested_but_not_installed_falls_back_with_one_warning(gpu_capability, unsloth_absent, caplog):
    with caplog.at_level(logging.INFO, logger="tifa_lite.backends.select"):
        name, reason = select_backend(recipe(model={"backend": "unsloth"}), T4)
    assert name == "transformers"
    assert "not installed" in reason and "tifa-lite[unsloth]" in reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith("model.backend=unsloth: loading with transformers instead")


def test_unsloth_requested_on_cpu_falls_back(unsloth_stand_in):
    name, reason = select_backend(recipe(model={"backend": "unsloth"}), CPU)
    assert (name, "no CUDA GPU" in reason) == ("transformers", True)


def test_gpu_below_compute_capability_7_falls_back(gpu_capability, unsloth_stand_in):
    gpu_capability((6, 1))
    old = Hardware(device="cuda", gpu_name="GeForce GTX 1080", bf16=False, gpu_count=1, total_memory_gib=8.0)
    name, reason = select_backend(recipe(model={"backend": "unsloth"}), old)
    assert name == "transformers"
    assert "6.1" in reason and "7.0" in reason


def test_explicit_transformers_wins_even_when_unsloth_could_run(gpu_capability, unsloth_stand_in):
    assert select_backend(recipe(model={"backend": "transformers"}), T4)[0] == "transformers"


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({"lora": {"use_dora": True}}, "use_dora"),
        ({"quant": {"quant_type": "fp4"}}, "quant_type=fp4"),
        ({"quant": {"double_quant": False}}, "double_quant=False"),
        ({"quant": {"bits": 8}}, "quant.bits=8"),
        ({"train": {"method": "reward"}}, "train.method=reward"),
        ({"distributed": {"world_size": 2, "nproc_per_node": 2}}, "distributed"),
        ({"distributed": {"deepspeed": "zero2.json"}}, "DeepSpeed"),
        ({"lora": {"target_modules": ".*proj"}}, "regex"),
        ({"lora": {"modules_to_save": ["score"]}}, "modules_to_save"),
        ({"quant": {"bits": None}, "lora": {"enabled": False}}, "lora.enabled=false"),
    ],
)
def test_recipe_settings_unsloth_would_change_fall_back(gpu_capability, unsloth_stand_in, sections, expected):
    name, reason = select_backend(recipe(model={"backend": "unsloth"}, **sections), T4)
    assert name == "transformers"
    assert expected in reason


def test_16bit_lora_and_embedding_training_stay_on_unsloth(gpu_capability, unsloth_stand_in):
    config = recipe(model={"backend": "unsloth"}, quant={"bits": None}, lora={"modules_to_save": ["lm_head", "embed_tokens"]})
    assert select_backend(config, T4)[0] == "unsloth"


def test_selection_leaves_the_recipe_unchanged(gpu_capability, unsloth_stand_in):
    config = recipe(model={"backend": "unsloth"}, lora={"r": 8})
    before = dump_config(config)
    assert select_backend(config, T4)[0] == "unsloth"
    assert select_backend(config, CPU)[0] == "transformers"
    assert dump_config(config) == before


def test_selection_never_imports_unsloth(gpu_capability, monkeypatch):
    # find_spec says "installed", but any real import attempt is caught by the spy.
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    real = select.importlib.util.find_spec
    monkeypatch.setattr(
        select.importlib.util, "find_spec",
        lambda name, *a: object() if name == "unsloth" else real(name, *a),
    )
    spy = ImportSpy()
    monkeypatch.setattr(sys, "meta_path", [spy, *sys.meta_path])
    for backend in ("auto", "unsloth", "transformers"):
        for hardware in (T4, CPU):
            select_backend(recipe(model={"backend": backend}), hardware)
    assert spy.attempts == []
    assert "unsloth" not in sys.modules


def test_cuda_capability_is_none_without_a_gpu():
    assert select.cuda_capability(CPU) is None


def test_preload_imports_unsloth_only_when_chosen(gpu_capability, unsloth_stand_in, monkeypatch):
    from tifa_lite.backends import preload_backend

    from tifa_lite.runplan import resolve_plan

    chosen = resolve_plan(recipe(model={"backend": "unsloth"}), hardware=T4).backend
    assert chosen == "unsloth"
    preload_backend(chosen)  # the stand-in satisfies the import
    monkeypatch.delitem(sys.modules, "unsloth")
    spy = ImportSpy()
    monkeypatch.setattr(sys, "meta_path", [spy, *sys.meta_path])
    for config, hardware in ((recipe(model={"backend": "unsloth"}), CPU), (recipe(), T4),
                             (recipe(model={"backend": "transformers"}), T4)):
        backend = resolve_plan(config, hardware=hardware).backend
        assert backend == "transformers"
        preload_backend(backend)
    assert spy.attempts == []

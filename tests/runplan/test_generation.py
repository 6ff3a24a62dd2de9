import logging
from pathlib import Path

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.runplan.generation import select_vllm

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode, vllm, cuda, expected", [
    ("auto", True, True, True),
    ("auto", True, False, False),
    ("auto", False, True, False),
    ("auto", False, False, False),
    ("off", True, True, False),
    ("on", True, True, True),
])
def test_select_vllm(mode, vllm, cuda, expected):
    assert select_vllm(mode, vllm_available=vllm, cuda_available=cuda) is expected


@pytest.mark.parametrize("vllm, cuda, missing", [(False, True, "vllm package"), (True, False, "CUDA GPU")])
def test_select_vllm_on_without_means_fails_clearly(vllm, cuda, missing):
    with pytest.raises(ConfigError, match=missing):
        select_vllm("on", vllm_available=vllm, cuda_available=cuda)


@pytest.mark.parametrize("bits", [4, 8])
def test_select_vllm_refuses_a_quantised_base_before_anything_loads(bits, caplog):
    """8-bit: TRL cannot hand LLM.int8 to vLLM. 4-bit: TRL 1.16's colocate sync pushes packed
    Params4bit data without its quant state (TRL issue 4973)."""
    with pytest.raises(ConfigError, match=f"quant.bits={bits}"):
        select_vllm("on", vllm_available=True, cuda_available=True, quant_bits=bits)
    with caplog.at_level(logging.INFO):
        assert select_vllm("auto", vllm_available=True, cuda_available=True, quant_bits=bits) is False
    assert "GRPO generation: transformers" in caplog.text
    assert select_vllm("auto", vllm_available=True, cuda_available=True, quant_bits=None) is True


def test_the_shipped_qlora_grpo_recipes_fall_back_in_the_plan(monkeypatch):
    from tifa_lite.hardware import Hardware
    from tifa_lite.runplan import generation, resolve_plan

    monkeypatch.setattr(generation, "vllm_importable", lambda: True)
    t4 = Hardware(device="cuda", gpu_name="Tesla T4", bf16=False, gpu_count=1, total_memory_gib=14.74)
    for name in ("grpo_qlora_t4.yaml", "grpo_qlora_a10.yaml"):
        config = load_recipe(REPO / "recipes" / name)
        assert config.grpo.use_vllm == "auto" and config.quant.bits == 4
        assert resolve_plan(config, hardware=t4).vllm is False
        with pytest.raises(ConfigError, match="TRL issue 4973"):
            resolve_plan(load_recipe(REPO / "recipes" / name, ["grpo.use_vllm=on"]), hardware=t4)


def test_select_vllm_detects_this_machine():
    import importlib.util

    import torch

    expected = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    assert select_vllm("auto") is expected

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


@pytest.mark.parametrize("mode, bits, device, rehearsal, fused, expected", [
    ("auto", 4, "cpu", None, False, True),  # bitsandbytes dequantises in every CPU matmul: the copy saves it
    ("auto", 4, "cpu", None, True, False),  # AVX512-BF16: bitsandbytes' fused CPU kernel stays
    ("auto", 4, "cuda", None, False, False),  # fused CUDA 4-bit kernels for decode batches: not replaced
    ("auto", 4, "cpu", "t4", False, False),  # a card's rehearsal follows the card's choice
    ("auto", None, "cpu", None, False, False),  # nothing quantised
    ("auto", 8, "cpu", None, False, False),
    ("on", 4, "cuda", None, False, True),
    ("off", 4, "cpu", None, False, False),
])
def test_select_dequantized_generation(mode, bits, device, rehearsal, fused, expected):
    from tifa_lite.runplan.generation import select_dequantized_generation

    assert select_dequantized_generation(mode, quant_bits=bits, device=device, rehearsal=rehearsal,
                                         fused_cpu_kernel=fused) is expected


def test_dequantized_generation_on_without_a_4bit_base_is_refused_in_the_plan():
    from tifa_lite.hardware import Hardware
    from tifa_lite.runplan import resolve_plan

    cpu = Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)
    recipe = {"model": {"name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}, "train": {"method": "grpo"},
              "quant": {"bits": None}, "grpo": {"dequantize_for_generation": "on"}}
    with pytest.raises(ConfigError, match=r"grpo.dequantize_for_generation=on needs a 4-bit base \(quant.bits=4\)"):
        resolve_plan(load_recipe(recipe), hardware=cpu)
    recipe["quant"]["bits"] = 4
    plan = resolve_plan(load_recipe(recipe), hardware=cpu)
    assert plan.dequantized_generation is True
    assert "dequantised once per call" in plan.describe()[2]
    recipe["grpo"]["dequantize_for_generation"] = False  # YAML's unquoted off
    assert resolve_plan(load_recipe(recipe), hardware=cpu).dequantized_generation is False

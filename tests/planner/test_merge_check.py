"""Where the merge self-check holds its model: it must fit the card it runs on (a 7B in
bf16 fits neither a T4 nor a free Colab's RAM alone), and the planner reports the same."""

from __future__ import annotations

import pytest

from tifa_lite.planner.merge_check import describe_for_card, gpu_bytes_needed, plan_check

GIB = 2**30
QWEN7B_FP32 = int(7.62e9 * 4)  # Qwen2.5-7B: 7.62B parameters


def test_a_7b_on_a_colab_t4_is_split_between_the_gpu_and_ram():
    plan = plan_check("fp16", QWEN7B_FP32, gpu_free=int(14.5 * GIB), ram_free=int(11.0 * GIB))
    assert plan.placement == "cuda+cpu" and plan.compute == "fp16"
    assert plan.gpu_bytes < 14.5 * GIB and plan.model_bytes - plan.gpu_bytes < 11.0 * GIB
    assert "split" in plan.why


def test_a_7b_on_an_a10_runs_whole_on_the_gpu():
    plan = plan_check("bf16", QWEN7B_FP32, gpu_free=int(21.5 * GIB), ram_free=int(40 * GIB))
    assert (plan.placement, plan.compute) == ("cuda", "bf16")
    assert plan.model_bytes == QWEN7B_FP32 // 2


def test_fp32_on_the_cpu_when_the_gpu_is_too_small_and_ram_is_plenty():
    plan = plan_check("bf16", QWEN7B_FP32, gpu_free=int(14.5 * GIB), ram_free=int(120 * GIB))
    assert (plan.placement, plan.compute) == ("cpu", "fp32")


@pytest.mark.parametrize("ram_gib, compute", [(64, "fp32"), (8, "bf16")])
def test_without_a_gpu(ram_gib, compute):
    plan = plan_check("bf16", QWEN7B_FP32, gpu_free=None, ram_free=ram_gib * GIB)
    assert (plan.placement, plan.compute) == ("cpu", compute)


def test_the_planner_line_names_the_peak_and_the_fallback():
    assert "fits" in describe_for_card("bf16", QWEN7B_FP32, int(22.06 * GIB))
    t4 = describe_for_card("fp16", QWEN7B_FP32, int(14.74 * GIB))
    assert "more than the card's 14.7 GiB" in t4 and "CPU" in t4
    assert gpu_bytes_needed("fp16", QWEN7B_FP32) > 14.74 * GIB


def test_plan_command_prints_the_merge_check(capsys):
    from tifa_lite.cli import main

    assert main(["plan", "recipes/sft_qlora_roleplay.yaml", "--gpu", "t4"]) == 0
    assert "merge     self-check of the merged model:" in capsys.readouterr().out


def test_the_check_uses_the_gpu_it_fits_on(fake_cuda, monkeypatch):
    from tifa_lite.merging import selfcheck

    fake_cuda((8, 6), "NVIDIA A10", 22.06, free_gib=21.0)
    gpu, ram = selfcheck.free_memory()
    assert gpu == 21 * GIB
    assert plan_check("bf16", QWEN7B_FP32, gpu, ram).placement == "cuda"

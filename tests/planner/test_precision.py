"""A recipe run on a T4 switches bf16 to fp16 with a warning (tifa_lite.hardware.resolve_precision),
and the planner plans with the same rule for every catalogue card."""

from __future__ import annotations

import logging

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.hardware import Hardware, resolve_precision
from tifa_lite.planner import GPUS
from tifa_lite.planner.fit import planned_precision

T4 = Hardware(device="cuda", gpu_name="Tesla T4", bf16=False, gpu_count=1, total_memory_gib=14.74)


def test_bf16_on_a_t4_becomes_fp16_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="tifa_lite.hardware"):
        assert resolve_precision("bf16", T4) == "fp16"
    assert "Tesla T4 has no bf16: switching precision to fp16" in caplog.text


def test_auto_on_a_t4_is_fp16_and_explicit_choices_stand():
    assert resolve_precision("auto", T4) == "fp16"
    assert resolve_precision("fp32", T4) == "fp32"
    a10 = Hardware(device="cuda", gpu_name="NVIDIA A10", bf16=True, gpu_count=1, total_memory_gib=22.06)
    assert resolve_precision("auto", a10) == "bf16"


@pytest.mark.parametrize("gpu", list(GPUS.values()), ids=list(GPUS))
@pytest.mark.parametrize("requested", ["auto", "bf16", "fp16", "fp32"])
def test_planner_precision_matches_the_runtime_rule(gpu, requested):
    hardware = Hardware(device="cuda", gpu_name=gpu.label, bf16=gpu.bf16, gpu_count=1, total_memory_gib=gpu.memory_gib)
    config = load_recipe({"train": {"precision": requested}})
    assert planned_precision(config, gpu) == resolve_precision(requested, hardware)


def test_cpu_plans_fp32_like_the_runtime():
    cpu = Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)
    config = load_recipe({"train": {"precision": "bf16"}})
    assert planned_precision(config, None) == resolve_precision("bf16", cpu) == "fp32"

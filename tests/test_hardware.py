"""The one bf16 decision (compute capability, not torch's emulation answer), the T4 switch,
the adapter dtype, and everything that must agree with them: detection, precision, the
planner's catalogue and the notebooks. GPUs are faked through the torch.cuda queries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tifa_lite import hardware
from tifa_lite.planner.hardware_catalog import gpu_from_detected

REPO = Path(__file__).resolve().parents[1]


def test_a_t4_has_no_bf16_although_torch_says_it_emulates_it(fake_cuda):
    fake_cuda((7, 5), "Tesla T4")
    assert torch.cuda.is_bf16_supported()  # what the old code asked
    assert hardware.supports_bf16() is False
    hw = hardware.detect()
    assert (hw.device, hw.bf16, hw.gpu_name) == ("cuda", False, "Tesla T4")
    assert hardware.resolve_precision("auto") == "fp16"
    assert hardware.native_precision() == "fp16"


@pytest.mark.parametrize("capability, expected", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((8, 6), True),
                                                  ((9, 0), True)])
def test_bf16_starts_at_compute_capability_8(fake_cuda, capability, expected):
    fake_cuda(capability, "some GPU")
    assert hardware.supports_bf16() is expected


def test_the_t4_switch_turns_bf16_off_on_any_gpu(fake_cuda, monkeypatch):
    fake_cuda((8, 6), "NVIDIA A10")
    assert hardware.resolve_precision("auto") == "bf16"
    monkeypatch.setenv(hardware.NO_BF16_ENV, "1")
    assert hardware.supports_bf16() is False
    assert hardware.resolve_precision("auto") == "fp16"
    assert hardware.resolve_precision("bf16") == "fp16"


def test_no_bf16_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this test is about a machine without CUDA")
    assert hardware.supports_bf16() is False
    assert hardware.native_precision() == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_adapters_are_fp32_under_every_precision(precision):
    # benchmarks/results/precision.md: bf16 adapters lost 95% of lora_A's updates at 2e-5.
    assert hardware.adapter_dtype(precision) == torch.float32
    assert hardware.adapter_dtype_name(precision) == "fp32"


@pytest.mark.parametrize("name, capability, memory", [("Tesla T4", (7, 5), 14.74), ("NVIDIA A10", (8, 6), 22.06),
                                                      ("NVIDIA H200", (9, 0), 139.8)])
def test_the_planner_catalogue_reads_the_same_decision(fake_cuda, monkeypatch, name, capability, memory):
    fake_cuda(capability, name, memory)
    hw = hardware.detect()
    gpu = gpu_from_detected(hw.gpu_name, hw.total_memory_gib, hw.bf16)
    assert gpu.bf16 is hw.bf16 is hardware.supports_bf16()
    assert gpu_from_detected(hw.gpu_name, hw.total_memory_gib).bf16 is hw.bf16  # asks the same function itself
    monkeypatch.setenv(hardware.NO_BF16_ENV, "1")  # treated as a T4: no bf16, no FlashAttention-2
    as_t4 = gpu_from_detected(name, memory)
    assert (as_t4.bf16, as_t4.flash_attn2) == (False, False)
    assert as_t4.compute_capability <= (7, 5)


def test_notebooks_decide_no_precision_of_their_own():
    sources = [REPO / "notebooks" / "build_notebooks.py", *sorted((REPO / "notebooks").glob("*.ipynb"))]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "is_bf16_supported" not in text, path
        assert "get_device_capability" not in text, path
    assert "dtype='auto'" in (REPO / "notebooks" / "quickstart_colab.ipynb").read_text(encoding="utf-8")

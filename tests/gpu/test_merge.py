"""The T4-mode SFT adapter merged in fp16 and in bf16, self-check passing on the GPU."""

from __future__ import annotations

import pytest

import tifa_lite
from tifa_lite.hardware import supports_bf16

from . import support

pytestmark = support.pytestmark


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_merge_self_check_passes_on_the_gpu(t4_sft, tmp_path, dtype):
    if dtype == "bf16" and support.CUDA and not supports_bf16():
        pytest.skip("this GPU has no bf16 (compute capability < 8.0)")
    report = tifa_lite.merge(t4_sft["result"].output_dir, tmp_path / f"merged_{dtype}", dtype=dtype)
    check = report["self_check"]
    assert check["passed"], check
    assert check["device"] == ("cuda" if support.CUDA else "cpu"), check["placement_reason"]
    assert not report["no_op"]
    support.Results.add(f"merge {dtype}", device=check["device"], max_diff=f"{check['max_logit_diff_vs_base_plus_adapter']:.3g}",
                        tolerance=check["tolerance"], adapter_effect=f"{check['adapter_effect_max_logit_diff']:.3g}",
                        greedy_agreement=check["greedy_agreement"])

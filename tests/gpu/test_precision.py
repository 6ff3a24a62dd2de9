"""QLoRA SFT on the GPU as a T4 (fp16) and as an A10 (bf16): precision, forward dtypes,
adapter dtype, attention, norms, and a loss that is finite and falls."""

from __future__ import annotations

import torch

from tifa_lite.hardware import adapter_dtype

from . import support

pytestmark = support.pytestmark


def _dtype_names(dtypes) -> list[str]:
    return sorted(str(d).replace("torch.", "") for d in dtypes)


def test_t4_mode_trains_in_fp16_without_a_bf16_tensor(t4_sft):
    expected = "fp16" if support.CUDA else "fp32"  # the dry run computes in fp32 on the CPU
    assert t4_sft["precision"] == expected
    assert (t4_sft["args_fp16"], t4_sft["args_bf16"]) == (support.CUDA, False)
    watch = t4_sft["watch"]
    assert watch.done, "the training forward was never seen"
    assert torch.bfloat16 not in watch.seen, f"bf16 in the forward, first at {watch.where.get(torch.bfloat16)!r}"
    want = adapter_dtype(t4_sft["precision"])
    assert set(t4_sft["trainable"]) == {str(want).replace("torch.", "")}
    assert t4_sft["attn"] == "sdpa"  # a T4 runs no FlashAttention-2
    if support.CUDA:
        assert t4_sft["norm_dtypes"] == {torch.float32}  # kept in fp32 under fp16 compute
    first, last = support.assert_finite_and_falling(t4_sft["losses"])
    support.Results.add("sft as T4", precision=t4_sft["precision"], forward=_dtype_names(watch.seen),
                        adapters=sorted(t4_sft["trainable"]), steps=len(t4_sft["losses"]),
                        loss=f"{first:.3f}->{last:.3f}")


def test_bf16_gpu_trains_in_bf16_without_an_fp16_tensor(bf16_sft):
    assert bf16_sft["precision"] == "bf16"
    assert (bf16_sft["args_fp16"], bf16_sft["args_bf16"]) == (False, True)
    watch = bf16_sft["watch"]
    assert watch.done
    assert torch.float16 not in watch.seen, f"fp16 in the forward, first at {watch.where.get(torch.float16)!r}"
    assert set(bf16_sft["trainable"]) == {str(adapter_dtype("bf16")).replace("torch.", "")}
    first, last = support.assert_finite_and_falling(bf16_sft["losses"])
    support.Results.add("sft bf16", precision="bf16", forward=_dtype_names(watch.seen), attn=bf16_sft["attn"],
                        adapters=sorted(bf16_sft["trainable"]), steps=len(bf16_sft["losses"]),
                        loss=f"{first:.3f}->{last:.3f}")

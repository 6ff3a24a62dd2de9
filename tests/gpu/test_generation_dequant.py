"""GRPO generation on the GPU from the 4-bit base as bitsandbytes runs it (its fused 4-bit
kernels for decode-sized batches) vs from a copy dequantised once per generate call
(``grpo.dequantize_for_generation``): the time of each, side by side, and that they agree.
On the CPU the copy is measured faster and is the default there; on CUDA the default stays
the 4-bit path until this check says otherwise (tifa_lite.runplan.generation)."""

from __future__ import annotations

import time

import pytest
import torch

from tifa_lite.modeling.dequantized import dequantized_base

from . import support

pytestmark = support.pytestmark
ROWS, PROMPT, NEW = 8, 256, 128


@pytest.mark.parametrize("compute", ["fp16", "bf16"])
def test_generation_from_a_dequantised_copy_vs_the_4bit_kernels(gpu_model_dir, compute):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from tifa_lite.hardware import supports_bf16

    if compute == "bf16" and support.CUDA and not supports_bf16():
        pytest.skip("this GPU has no bf16")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[compute]
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    model = AutoModelForCausalLM.from_pretrained(gpu_model_dir, dtype=dtype, quantization_config=quant,
                                                 device_map={"": 0} if support.CUDA else None)
    policy = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")).eval()
    device = next(model.parameters()).device
    torch.manual_seed(0)
    ids = torch.randint(10, support.SIZE.vocab - 10, (1, PROMPT), device=device).repeat(ROWS, 1)
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, min_new_tokens=NEW,
                  do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=0)

    def timed(dense: bool):
        if support.CUDA:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.no_grad():
            if dense:
                with dequantized_base(model):
                    out = policy.generate(**kwargs)
            else:
                out = policy.generate(**kwargs)
        if support.CUDA:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20 if support.CUDA else 0.0
        return time.perf_counter() - start, peak, out

    timed(False)  # warm-up: kernels, allocator
    runs = {"4bit": [], "dense": []}
    for order in (("4bit", "dense"), ("dense", "4bit")):
        for arm in order:
            runs[arm].append(timed(arm == "dense"))
    four_bit, dense = runs["4bit"][0][2], runs["dense"][0][2]
    # the first decoding step's logits agree to the dtype's rounding (the kernels sum in different orders)
    torch.testing.assert_close(dense.scores[0].float(), four_bit.scores[0].float(), rtol=5e-2, atol=5e-2)
    seconds = {arm: min(r[0] for r in rs) for arm, rs in runs.items()}
    support.Results.add(
        f"generation 4-bit vs dequantised ({compute})", four_bit_s=round(seconds["4bit"], 3),
        dense_s=round(seconds["dense"], 3), ratio=f"{seconds['dense'] / seconds['4bit']:.2f}x",
        peak_mib_4bit=round(max(r[1] for r in runs["4bit"])), peak_mib_dense=round(max(r[1] for r in runs["dense"])),
        same_tokens=bool(torch.equal(four_bit.sequences, dense.sequences)), rows=ROWS, prompt=PROMPT, new_tokens=NEW,
        note="CPU DRY RUN: not a GPU figure" if support.DRY_RUN else "")

"""Generation from a 4-bit base dequantised once per generate call: the same numbers as
bitsandbytes' own 4-bit path, in each card's compute dtype, and nothing left behind."""

from __future__ import annotations

import pytest
import torch

from tifa_lite.modeling.dequantized import (dequantize_for_generation, dequantized_base, dequantized_weight,
                                            linear4bit_layers)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_4bit(model_dir, compute: str, double_quant: bool = True, lora: bool = True):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = DTYPES[compute]
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                               bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=dtype)
    # The copy reproduces bitsandbytes' dequantise-and-matmul path. On a CPU with AVX512-BF16,
    # eval-mode 4-bit matmuls take bitsandbytes' fused kernel instead (other sums: the plan's
    # ``auto`` leaves the copy off there, and its first-use probe tells the two apart); compare
    # with the path the copy stands in for.
    for layer in linear4bit_layers(model):
        layer.support_avx512bf16_for_cpu = False
    model.generation_config.pad_token_id = model.config.eos_token_id
    if lora:
        torch.manual_seed(1)
        peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
        return peft, model  # generate through PEFT as TRL does; the wrapper sits on the transformers model
    return model, model


@pytest.mark.parametrize("compute", list(DTYPES))
@pytest.mark.parametrize("double_quant", [True, False])
def test_the_dense_weight_is_what_bitsandbytes_multiplies_by(tiny_model_dir, compute, double_quant):
    _, model = load_4bit(tiny_model_dir, compute, double_quant, lora=False)
    layers = linear4bit_layers(model)
    assert len(layers) == 2 * 7  # q k v o gate up down in each of the 2 layers
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in layers:
            x = torch.randn(3, 5, layer.in_features).to(DTYPES[compute])
            four_bit = layer(x)
            dense = torch.nn.functional.linear(x, dequantized_weight(layer, x.dtype))
            assert torch.equal(four_bit, dense)


@pytest.mark.parametrize("compute", list(DTYPES))
def test_generation_is_token_for_token_and_logit_for_logit_the_4bit_one(tiny_model_dir, compute):
    peft, model = load_4bit(tiny_model_dir, compute)
    torch.manual_seed(0)
    ids = torch.randint(10, 5000, (2, 12)).repeat_interleave(2, dim=0)
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                  output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        plain = peft.generate(**kwargs)
        dequantize_for_generation(model)
        dense = peft.generate(**kwargs)
    assert torch.equal(plain.sequences, dense.sequences)
    for step_plain, step_dense in zip(plain.scores, dense.scores):
        assert torch.equal(step_plain, step_dense)


def test_the_copy_lives_only_inside_the_block(tiny_model_dir):
    peft, model = load_4bit(tiny_model_dir, "fp32")
    layers = linear4bit_layers(model)
    calls = []
    real = torch.ops.bitsandbytes.dequantize_4bit.default

    def counting(*args, **kwargs):
        calls.append(args[4])
        return real(*args, **kwargs)

    ids = torch.randint(10, 5000, (2, 6))
    with torch.no_grad():
        with dequantized_base(model) as count:
            assert count == len(layers)
            assert all("forward" in layer.__dict__ for layer in layers)
            torch.ops.bitsandbytes.dequantize_4bit.default = counting
            try:
                peft.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
            finally:
                torch.ops.bitsandbytes.dequantize_4bit.default = real
        # one dequantisation per layer for the prefill and all five decoded tokens
        assert len(calls) == len(layers)
        assert all("forward" not in layer.__dict__ for layer in layers)  # the 4-bit forward is back
        out = model(input_ids=ids)  # and computes
    assert torch.isfinite(out.logits).all()


def test_the_wrapper_is_installed_once_and_only_on_a_4bit_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    _, model = load_4bit(tiny_model_dir, "fp32", lora=False)
    dequantize_for_generation(model)
    wrapped = model.generate
    dequantize_for_generation(model)
    assert model.generate is wrapped and wrapped._tifa_dequantized
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = plain.generate
    dequantize_for_generation(plain)
    assert plain.generate == before  # nothing to dequantise: untouched


def test_the_probe_tells_bitsandbytes_fused_cpu_kernel_apart(tiny_model_dir):
    """On a CPU with AVX512-BF16, bitsandbytes runs eval-mode 4-bit matmuls in a fused kernel of
    its own, not dequantise-and-matmul: the copy would change the numbers, so its first-use
    probe switches it off (and the plan's ``auto`` does not turn it on there)."""
    from bitsandbytes.functional import has_avx512bf16
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes has no fused CPU kernel to tell apart")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quant, dtype=torch.float32).eval()
    ids = torch.randint(10, 5000, (2, 8))
    with torch.no_grad():
        expected = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                                  pad_token_id=0)
        probe = dequantize_for_generation(model)
        got = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                             pad_token_id=0)
    assert "differ from the 4-bit layers'" in probe.off_reason
    assert torch.equal(got, expected)  # the 4-bit layers' own generation

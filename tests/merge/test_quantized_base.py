"""merge --base-weights: ΔW added to dequant(NF4(W)) (what a QLoRA run trained against) or
to the original W, both measured against the trained model itself (4-bit base + adapter)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tifa_lite
from tifa_lite.merging import MergeError
from tifa_lite.merging.quantized_base import TrainedQuant, nf4_round_trip, quantized_linear_names

from .conftest import as_qlora_run, train_adapter


@pytest.fixture(scope="module")
def tiny_qwen2_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A second architecture (Qwen2: biased q/k/v projections, untied head)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("tiny_qwen2")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(1)
    Qwen2ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("double_quant", [False, True])
def test_round_trip_is_exactly_what_bitsandbytes_holds_in_training(tiny_model_dir, double_quant):
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    from transformers import AutoModelForCausalLM

    quant = TrainedQuant(double_quant=double_quant, dtype=torch.float32)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, quantization_config=quant.bnb_config())
    held = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert quantized_linear_names(config, AutoModelForCausalLM) == held
    assert held and "lm_head.weight" not in held
    for name in sorted(held)[:3]:
        module = model.get_submodule(name.removesuffix(".weight"))
        in_training = F.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
        assert torch.equal(nf4_round_trip(original[name], quant), in_training)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_dequantized_merge_is_the_trained_model_and_original_is_not(arch, tiny_model_dir, tiny_qwen2_dir, tmp_path):
    base = tiny_model_dir if arch == "llama" else tiny_qwen2_dir
    adapter = train_adapter(base, tmp_path / "adapter", qlora=True)
    run = as_qlora_run(adapter, base, tmp_path / "run")

    auto = tifa_lite.merge(run, tmp_path / "deq", dtype="fp32")
    original = tifa_lite.merge(run, tmp_path / "orig", dtype="fp32", base_weights="original")
    assert auto["base_weights"] == "dequantized" and original["base_weights"] == "original"
    deq_check, orig_check = auto["self_check"], original["self_check"]
    assert deq_check["passed"] and orig_check["passed"]  # both are the right arithmetic for their base
    assert deq_check["merged_into"] == "dequantized" and "NF4" in deq_check["reference"]
    deq, orig = deq_check["vs_trained"], orig_check["vs_trained"]
    # Against what was trained, only the dequantized merge is (fp32-)exact.
    div = deq["greedy_first_divergence"]
    assert deq["top1_agreement"] == 1.0 and div["identical"] == div["prompts"]
    assert deq["mean_kl"] < 1e-6 and deq["max_logit_diff"] < 1e-3
    assert orig["mean_kl"] > 100 * max(deq["mean_kl"], 1e-9)
    assert orig["max_logit_diff"] > deq_check["tolerance"]


def test_dequantized_needs_a_run_that_records_its_4bit_base(tiny_model_dir, lora_adapter, tmp_path):
    with pytest.raises(MergeError, match="does not record a 4-bit base"):
        tifa_lite.merge(lora_adapter, tmp_path / "out", dtype="fp32", base=str(tiny_model_dir), base_weights="dequantized")
    report = tifa_lite.merge(lora_adapter, tmp_path / "out", dtype="fp32", base=str(tiny_model_dir))
    assert report["base_weights"] == "original" and report["self_check"]["vs_trained"] is None

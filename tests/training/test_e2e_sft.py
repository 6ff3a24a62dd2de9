"""The real thing: QLoRA SFT of the embedded SmolLM2-135M-Instruct on the shipped role-play
sample. Held-out loss falls, the adapter saves and loads back, and generation changes."""

import pytest

from tifa_lite import train
from tifa_lite.modeling.inference import load_inference_model
from tifa_lite.evaluation.gsm8k import generate_greedy
from tifa_lite.evaluation.roleplay import perplexity, read_conversations
from tifa_lite.training.quickstart import HELDOUT, RECIPE, held_out_prompts, quickstart_overrides

pytestmark = pytest.mark.slow
# 15 steps: held-out loss 3.951 -> 3.751 here (2026-12-07), four times the margin below; 30 steps
# took 5.4 of the suite's 26 minutes
STEPS = 15


def test_qlora_sft_on_real_model_lowers_heldout_loss_and_changes_generation(tmp_path, embedded_model_dir):
    heldout = read_conversations(HELDOUT, limit=24)
    prompts = held_out_prompts(2)

    def measure(adapter=None):
        model, tokenizer, *_ = load_inference_model("smollm2-135m-instruct", adapter, bits=4)
        assert type(model).__name__ == ("PeftModelForCausalLM" if adapter else "LlamaForCausalLM")
        replies = generate_greedy(model, tokenizer, prompts, max_new_tokens=24)
        return perplexity(model, tokenizer, heldout, max_length=384).nll, replies

    loss_before, replies_before = measure()
    overrides = quickstart_overrides(str(tmp_path / "run"), steps=STEPS)
    result = train(RECIPE, **overrides)
    assert result.global_step == STEPS and result.config.is_qlora
    assert (result.output_dir / "adapter_model.safetensors").is_file()

    loss_after, replies_after = measure(result.output_dir)
    assert loss_after < loss_before - 0.05, (loss_before, loss_after)
    assert replies_after != replies_before

"""Memory terms against hand-computed cases on a tiny shape (h=64, I=128, 2 layers, 4 heads of
16, 2 KV heads, vocab 1000, tied embeddings)."""

from __future__ import annotations

import dataclasses

import pytest

from tifa_lite.planner import PlanInput, estimate
from tifa_lite.planner.memory import GIB, activation_bytes_per_token, lora_params, weights_bytes
from tifa_lite.planner.shapes import ModelShape

TINY = ModelShape(name="tiny", hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=1000,
                  tied=True, head_dim=16)
# Per layer: q 64x64, k 64x32, v 64x32, o 64x64, gate/up/down 64x128 each.
LINEAR = 2 * (4096 + 2048 + 2048 + 4096 + 3 * 8192)  # 73728
REST = 1000 * 64 + 2 * 2 * 64 + 64  # embedding (tied head) + norms = 64320


def test_param_counts_by_hand():
    assert TINY.linear_params == LINEAR
    assert TINY.total_params == LINEAR + REST


def test_nf4_double_quant_weights_by_hand():
    # 4 bits + 8-bit absmax per 64 + fp32 scale per 256 blocks = 4.126953125 bits/weight; the rest in bf16.
    assert weights_bytes(TINY, 4, 2, double_quant=True) == pytest.approx(LINEAR * 4.126953125 / 8 + REST * 2)
    assert weights_bytes(TINY, 4, 2, double_quant=True) == pytest.approx(38034 + 128640)
    # fp32 absmax per 64 weights: 4.5 bits/weight.
    assert weights_bytes(TINY, 4, 2, double_quant=False) == pytest.approx(41472 + 128640)
    # int8 + fp32 scale per output row (per layer rows: 64+32+32+64+128+128+64 = 512).
    assert weights_bytes(TINY, 8, 2, double_quant=True) == pytest.approx(LINEAR + 2 * 512 * 4 + REST * 2)
    assert weights_bytes(TINY, None, 2, double_quant=True) == (LINEAR + REST) * 2


def test_lora_param_count_by_hand():
    # r=8: q 8*(64+64) + k 8*(64+32) + v 8*96 + o 8*128 + gate/up/down 8*192 each = 8192 per layer.
    assert lora_params(TINY, 8, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")) == 16384
    assert lora_params(TINY, 8, ("q_proj", "v_proj")) == 2 * (1024 + 768)


def test_activation_bytes_per_token_by_hand():
    inp = PlanInput(shape=TINY, precision="bf16", lora=False, seq_len=16)
    per_layer, backward_work = activation_bytes_per_token(inp, act=2, lora_bytes=4)
    # norms 2 x ((4 + 2*2) x 64 + 4 for the rsqrt) = 1032; attention (3*64 + 2*32) x 2 + 4 heads x fp32
    # log-sum-exp = 528; MLP 4*128*2 = 1024.
    assert per_layer == 2584
    assert backward_work == 3 * 128 * 2
    # A frozen base keeps less: norms only their fp32 input (4*64 + 4 each), attention without o_proj's
    # input (2*64 + 2*32) x 2 + 16, MLP without down_proj's input 3*128*2 -> 520 + 400 + 768 = 1688.
    # LoRA r=8 on q only, dropout > 0 on CUDA: lora_A output 8 x bf16 (autocast), the bool dropout mask
    # 64 x 1 and autocast's bf16 copy of the dropped-out fp32 input 64 x 2.
    lora_inp = PlanInput(shape=TINY, precision="bf16", lora=True, lora_r=8, lora_dropout=0.1, lora_targets=("q_proj",))
    assert activation_bytes_per_token(lora_inp, act=2, lora_bytes=4)[0] == 1688 + 16 + 64 + 128
    # On the CPU dropout keeps an fp32 noise tensor, and the heap q_proj's freed base and adapter outputs: 64 x (2 + 4).
    cpu_inp = PlanInput(shape=TINY, device="cpu", precision="bf16", lora=True, lora_r=8, lora_dropout=0.1,
                        lora_targets=("q_proj",))
    assert activation_bytes_per_token(cpu_inp, act=2, lora_bytes=4)[0] == 1688 + 16 + 64 * (4 + 2) + 64 * 6


def test_sft_lora_plan_terms_by_hand():
    inp = PlanInput(shape=TINY, device="cuda", precision="bf16", quant_bits=None, lora=True, lora_r=8,
                    lora_dropout=0.0, batch=2, seq_len=16, logits="full", optimizer="adamw")
    plan = estimate(inp)
    tokens = 32
    n_lora = 16384
    assert plan.static["runtime"] == 0.5
    assert plan.static["base weights"] * GIB == pytest.approx((LINEAR + REST) * 2)
    # fp32 adapters (PEFT upcasts them on a 16-bit base): params + grads 8 B, AdamW moments 8 B.
    assert plan.static["LoRA params + grads"] * GIB == pytest.approx(n_lora * 8)
    assert plan.static["optimizer states"] * GIB == pytest.approx(n_lora * 8)
    # Under CUDA autocast PEFT leaves the bf16 input as it is (autocast casts the fp32 adapter weight),
    # so lora_A keeps the module's input itself, shared by q/k/v and by gate/up (fan-ins 64 x 3 + 128),
    # and its lora_A output (8 x bf16), on top of the frozen layer's 1688.
    lora_per_layer = 8 * 2 * 7 + 2 * (64 * 3 + 128)
    assert plan.train_phase["activations"] * GIB == pytest.approx(tokens * 2 * (1688 + lora_per_layer))
    # The CPU rehearsal: PEFT's torch.is_autocast_enabled() asks about CUDA, so each adapter casts its
    # input to fp32 and autocast casts it back: a bf16 copy per module (fan-ins 64 x 6 + 128).
    rehearsal = estimate(dataclasses.replace(inp, peft_casts_inputs=True))
    assert rehearsal.train_phase["activations"] * GIB == pytest.approx(
        tokens * 2 * (1688 + 8 * 2 * 7 + 2 * (64 * 6 + 128)))
    assert plan.train_phase["logits"] * GIB == pytest.approx(tokens * 1000 * (2 + 12))
    # Backward's gradient working set (32 tokens x 768 B) is smaller than the freed logits: no extra term.
    assert "backward layer work" not in plan.train_phase
    assert plan.peak_gib == pytest.approx(sum(plan.static.values()) + sum(plan.train_phase.values()))
    assert plan.allocator_peak_gib == pytest.approx(plan.peak_gib - 0.5)


def test_gradient_checkpointing_keeps_layer_inputs_only():
    base = dict(shape=TINY, precision="bf16", quant_bits=None, lora=False, batch=1, seq_len=1024, logits="trl_chunked")
    plain = estimate(PlanInput(**base))
    ckpt = estimate(PlanInput(**base, gradient_checkpointing=True))
    assert ckpt.train_phase["activations"] * GIB == 1024 * 64 * 2 * 2  # tokens x hidden x bf16 x layers
    assert plain.train_phase["activations"] * GIB == 1024 * 2584 * 2
    assert ckpt.peak_gib < plain.peak_gib
    assert ckpt.activation_bytes_per_token_ckpt == 64 * 2 * 2 + 2584 + 768


def test_full_finetune_optimizer_and_zero_sharding():
    full = estimate(PlanInput(shape=TINY, precision="bf16", quant_bits=None, lora=False))
    p = TINY.total_params
    assert full.static["gradients"] * GIB == p * 2
    assert full.static["optimizer states"] * GIB == p * 4  # torch AdamW moments in the bf16 param dtype
    z3 = estimate(PlanInput(shape=TINY, precision="bf16", quant_bits=None, lora=False, zero_stage=3, world_size=8))
    assert z3.static["optimizer states"] * GIB == pytest.approx(p * 12 / 8)  # fp32 master + moments, sharded
    assert z3.static["gradients"] * GIB == pytest.approx(p * 2 / 8)
    z2 = estimate(PlanInput(shape=TINY, precision="bf16", quant_bits=None, lora=False, zero_stage=2, world_size=8))
    assert z2.static["base weights"] * GIB == p * 2  # ZeRO-2 keeps whole weights
    # ZeRO-3: a 1/8 shard + the gathered largest block (here the 64000-param embedding) and the prefetched next.
    assert z3.static["base weights"] * GIB == pytest.approx(p * 2 / 8 + 2 * 64000 * 2)
    paged = estimate(PlanInput(shape=TINY, precision="bf16", quant_bits=None, lora=False,
                               optimizer="paged_adamw_8bit", optimizer_in_backward=True))
    assert paged.static["optimizer states"] == 0
    assert paged.static["gradients"] * GIB == TINY.largest_layer_params * 2


def test_grpo_generation_kv_cache_and_vllm_reserve():
    inp = PlanInput(shape=TINY, precision="bf16", method="grpo", batch=4, generation_batch=16, seq_len=300,
                    max_prompt_length=100, max_completion_length=200)
    plan = estimate(inp)
    # 2 (k, v) x layers x kv_dim x bf16 x rows x (prompt + completion)
    assert plan.generation_phase["generation KV cache"] * GIB == 2 * 2 * 32 * 2 * 16 * 300
    assert plan.peak_gib >= sum(plan.static.values()) + sum(plan.generation_phase.values()) - 1e-12
    with_vllm = estimate(PlanInput(shape=TINY, precision="bf16", method="grpo", use_vllm=True,
                                   vllm_gpu_memory_utilization=0.3, gpu_memory_gib=22.0))
    assert with_vllm.static["vLLM reserve"] == pytest.approx(6.6)
    assert not with_vllm.generation_phase


def test_grpo_levers_count_one_prompt_per_group():
    common = dict(shape=TINY, precision="bf16", method="grpo", batch=8, num_generations=8, seq_len=1000 + 128,
                  max_prompt_length=1000, max_completion_length=128, generation_batch=8)
    plain, levers = estimate(PlanInput(**common)), estimate(PlanInput(**common, prefill_once=True, pack_groups=True))
    # the loss forward: one prompt + 8 x (128 completion tokens + the repeated last prompt token)
    assert levers.notes["activations"].startswith(f"{1000 + 8 * 129} tokens")
    assert plain.notes["activations"].startswith(f"{8 * 1128} tokens")
    # the bool mask, and SDPA's bf16 additive copy of it kept by each of the 2 layers for the backward
    assert levers.train_phase["packed attention mask"] * GIB == (1000 + 8 * 129) ** 2 * (1 + 2 * 2)
    ckpt = estimate(PlanInput(**common, prefill_once=True, pack_groups=True, gradient_checkpointing=True))
    assert ckpt.train_phase["packed attention mask"] * GIB == (1000 + 8 * 129) ** 2 * (1 + 2)
    assert levers.train_phase["activations"] < plain.train_phase["activations"] / 4
    # the cache held while decoding is the same (repeated to every row); the prefill is one prompt's
    assert levers.generation_phase["generation KV cache"] == plain.generation_phase["generation KV cache"]
    assert levers.generation_phase["generation work"] < plain.generation_phase["generation work"]


def test_quantisation_orders_weights():
    sizes = [estimate(PlanInput(shape=TINY, quant_bits=b)).static["base weights"] for b in (4, 8, None)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_cpu_plan_uses_fp32_and_the_python_baseline():
    plan = estimate(PlanInput(shape=TINY, device="cpu", precision="fp32", quant_bits=None, lora=True))
    assert plan.static["runtime"] == 0.44
    assert plan.static["base weights"] * GIB == TINY.total_params * 4


def test_reward_model_has_no_vocabulary_logits_or_lm_head():
    untied = ModelShape(name="u", hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=1000,
                        tied=False, head_dim=16)
    sft = estimate(PlanInput(shape=untied, quant_bits=None, method="sft"))
    reward = estimate(PlanInput(shape=untied, quant_bits=None, method="reward"))
    assert reward.train_phase["logits"] == 0
    assert (sft.static["base weights"] - reward.static["base weights"]) * GIB == 1000 * 64 * 2


def test_dequantized_generation_holds_a_dense_copy_of_the_linear_weights_while_generating():
    common = dict(shape=TINY, precision="bf16", method="grpo", batch=8, num_generations=8, seq_len=300,
                  max_prompt_length=100, max_completion_length=200, quant_bits=4)
    plain, dense = estimate(PlanInput(**common)), estimate(PlanInput(**common, dequantized_generation=True))
    assert dense.generation_phase["dequantised base"] * GIB == TINY.linear_params * 2  # bf16 copy
    assert "dequantised base" not in plain.generation_phase
    assert dense.train_phase == plain.train_phase  # freed before the training forward
    # nothing to copy on an unquantised base
    assert "dequantised base" not in estimate(PlanInput(**{**common, "quant_bits": None},
                                                        dequantized_generation=True)).generation_phase

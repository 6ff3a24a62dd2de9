"""A GRPO group's prompt computed once: the packed loss forward and the shared prefill give
what TRL's padded paths give — log-probs, entropies, gradients, generated tokens."""

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from tifa_lite.methods.grpo_groups import PackedGroupLogps, no_router_logits, pack_groups, packable, prefill_once

PAD = 0


def tiny_policy(attn: str, vocab: int = 96, loop=None):
    """A 2-layer random Llama with TRL's fused head and a LoRA whose B is not zero (so the
    adapter changes the output and has gradients worth comparing); ``loop``: a
    ``model.layer_loop`` applied before PEFT, as the loader does."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=PAD, attn_implementation=attn)
    model = LlamaForCausalLM(config)
    if loop is not None:
        from tifa_lite.config.schema import LayerLoopConfig
        from tifa_lite.modeling.layer_loop import apply_layer_loop

        apply_layer_loop(model, LayerLoopConfig(**loop))
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def group_batch(generations: int = 3):
    """TRL's layout: two prompts of different lengths left-padded, each repeated for its
    group, completions of different lengths right-padded."""
    torch.manual_seed(1)
    prompts = [torch.randint(1, 96, (7,)), torch.randint(1, 96, (4,))]
    rows, masks = [], []
    width, completion = 7, 5
    for prompt in prompts:
        for g in range(generations):
            done = completion - g  # replies of different lengths
            reply = torch.randint(1, 96, (done,))
            pad_left, pad_right = width - len(prompt), completion - done
            rows.append(torch.cat([torch.full((pad_left,), PAD), prompt, reply, torch.full((pad_right,), PAD)]))
            masks.append(torch.cat([torch.zeros(pad_left), torch.ones(len(prompt) + done), torch.zeros(pad_right)]))
    return torch.stack(rows), torch.stack(masks).long(), completion


class TRLPath:
    """TRL's own method on an object that has only what it reads (``accelerator.autocast``)."""

    accelerator = SimpleNamespace(autocast=nullcontext, is_main_process=True)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        from trl import GRPOTrainer

        return GRPOTrainer._get_per_token_logps_and_entropies(self, *args, **kwargs)


class PackedPath(PackedGroupLogps, TRLPath):
    pass


def logps_and_grads(path, model, ids, mask, completion, batch_size=None):
    model.zero_grad()
    logps, entropy, _ = path._get_per_token_logps_and_entropies(model, ids, mask, completion, batch_size=batch_size,
                                                               compute_entropy=True)
    completion_mask = mask[:, -completion:]
    (logps * completion_mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), entropy.detach(), grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_groups_give_trl_log_probs_entropies_and_gradients(attn, checkpointing):
    model = tiny_policy(attn)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids, mask, completion = group_batch()
    expected = logps_and_grads(TRLPath(), model, ids, mask, completion)
    got = logps_and_grads(PackedPath(), model, ids, mask, completion)
    completion_mask = mask[:, -completion:].bool()
    torch.testing.assert_close(got[0][completion_mask], expected[0][completion_mask], rtol=1e-5, atol=1e-5)
    assert torch.all(got[0][~completion_mask] == 0)  # padding scores 0, as TRL's labels -100 do
    torch.testing.assert_close(got[1][completion_mask], expected[1][completion_mask], rtol=1e-5, atol=1e-5)
    assert expected[2].keys() == got[2].keys() and len(got[2]) > 0
    for name, grad in expected[2].items():
        torch.testing.assert_close(got[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("per_pass", [True, False])
def test_levers_are_exact_on_a_looped_model(per_pass):
    """Looped layers (model.layer_loop) keep a KV-cache slot per pass; both levers go through them."""
    loop = {"start": 0, "end": 2, "repeats": 2, "lora_per_pass": per_pass}
    model = tiny_policy("sdpa", loop=loop).train()
    ids, mask, completion = group_batch()
    expected = logps_and_grads(TRLPath(), model, ids, mask, completion)
    got = logps_and_grads(PackedPath(), model, ids, mask, completion)
    completion_mask = mask[:, -completion:].bool()
    torch.testing.assert_close(got[0][completion_mask], expected[0][completion_mask], rtol=1e-5, atol=1e-5)
    for name, grad in expected[2].items():
        torch.testing.assert_close(got[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    plain, shared = model.eval(), tiny_policy("sdpa", loop=loop).eval()
    prefill_once(shared.get_base_model())
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD, use_cache=True)
    prompts, prompt_mask = ids[:, :-completion], mask[:, :-completion]
    assert torch.equal(shared.generate(input_ids=prompts, attention_mask=prompt_mask, **kwargs),
                       plain.generate(input_ids=prompts, attention_mask=prompt_mask, **kwargs))


def test_packing_follows_trl_chunks_and_drops_padding():
    model = tiny_policy("sdpa")
    ids, mask, completion = group_batch()
    # chunks of 2 rows split a group of 3: each chunk packs what it holds
    expected = logps_and_grads(TRLPath(), model, ids, mask, completion, batch_size=2)[0]
    got = logps_and_grads(PackedPath(), model, ids, mask, completion, batch_size=2)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    packed = pack_groups(ids, mask, completion)
    # each prompt (minus its last token) once, then each reply after a copy of that last token
    real_prompts = (7 - 1) + (4 - 1)
    real_branches = int(mask[:, -completion:].sum()) + len(ids)
    assert packed.input_ids.shape[1] == real_prompts + real_branches < ids.numel()


def test_nothing_to_share_or_not_exact_falls_back():
    ids, mask, completion = group_batch(generations=1)
    assert pack_groups(ids, mask, completion) is None  # every prompt differs
    assert packable(tiny_policy("sdpa"))
    assert not packable(SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2")))


@pytest.mark.parametrize("sample", [False, True])
def test_prefill_once_generates_what_generate_generates(sample):
    model = tiny_policy("sdpa").eval()
    shared = tiny_policy("sdpa").eval()  # the same seed: the same weights (a deepcopy would share TRL's patched forward)
    prefill_once(shared)
    ids, mask, completion = group_batch()
    prompts, prompt_mask = ids[:, :-completion], mask[:, :-completion]
    kwargs = dict(max_new_tokens=6, do_sample=sample, pad_token_id=PAD, output_scores=True,
                  return_dict_in_generate=True, use_cache=True)
    shared.generate(input_ids=prompts, attention_mask=prompt_mask, **kwargs)  # the lever's one-time self-check
    tokens_seen = {}
    for name, m in (("plain", model), ("shared", shared)):
        m.get_input_embeddings().register_forward_hook(
            lambda _m, inputs, _o, name=name: tokens_seen.__setitem__(name, tokens_seen.get(name, 0) + inputs[0].numel()))
    torch.manual_seed(3)
    plain = model.generate(input_ids=prompts, attention_mask=prompt_mask, **kwargs)
    torch.manual_seed(3)
    got = shared.generate(input_ids=prompts, attention_mask=prompt_mask, **kwargs)
    assert torch.equal(got.sequences, plain.sequences)
    # the prompts went through the model once per unique prompt (2 of 6 rows), not once per row
    rows, width = prompts.shape
    decode_steps = rows * (kwargs["max_new_tokens"] - 1)
    assert tokens_seen["plain"] == rows * width + decode_steps
    assert tokens_seen["shared"] == 2 * (width - 1) + rows + decode_steps
    for a, b in zip(got.scores, plain.scores):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


class AutocastPath:
    """TRL's trainer under a card's autocast, as accelerate sets it up (on the CPU rehearsal)."""

    def __init__(self, dtype):
        self.accelerator = SimpleNamespace(autocast=lambda: torch.autocast("cpu", dtype=dtype), is_main_process=True)


class AutocastTRL(AutocastPath, TRLPath):
    pass


class AutocastPacked(PackedGroupLogps, AutocastTRL):
    pass


@pytest.mark.parametrize("card, dtype", [("t4", torch.float16), ("a10", torch.bfloat16)])
def test_both_levers_in_the_cards_dtypes(card, dtype):
    """The rehearsal of a T4 (fp16 base and autocast, fp32 adapters, loss scaler) and an A10
    (bf16): the packed loss forward agrees with TRL's padded one to the dtype's rounding and
    its scaled gradients unscale to finite values that agree too; the shared prefill, run
    outside autocast as TRL generates, samples the same greedy tokens."""
    model = tiny_policy("sdpa")
    for name, param in model.named_parameters():
        param.data = param.data.to(torch.float32 if "lora_" in name else dtype)  # the plan's dtypes
    model.train()
    ids, mask, completion = group_batch()
    completion_mask = mask[:, -completion:].bool()
    results = []
    for path in (AutocastTRL(dtype), AutocastPacked(dtype)):
        model.zero_grad()
        scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16, init_scale=2.0 ** 12)
        logps, entropy, _ = path._get_per_token_logps_and_entropies(model, ids, mask, completion, compute_entropy=True)
        scaler.scale(-(logps * completion_mask).sum()).backward()
        grads = {n: p.grad.float() / scaler.get_scale() for n, p in model.named_parameters() if p.grad is not None}
        assert all(torch.isfinite(g).all() for g in grads.values())
        results.append((logps.detach().float(), entropy.detach().float(), grads))
    (trl_logps, trl_entropy, trl_grads), (logps, entropy, grads) = results
    tolerance = {torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]  # 10 and 8 mantissa bits, summed differently
    torch.testing.assert_close(logps[completion_mask], trl_logps[completion_mask], rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(entropy[completion_mask], trl_entropy[completion_mask], rtol=tolerance, atol=tolerance)
    assert grads.keys() == trl_grads.keys() and all("lora_" in n for n in grads)
    for name, grad in trl_grads.items():
        cosine = torch.nn.functional.cosine_similarity(grads[name].flatten(), grad.flatten(), dim=0)
        assert cosine > 0.99, name
    model.eval()
    prompts, prompt_mask = ids[:, :-completion], mask[:, :-completion]
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=PAD, use_cache=True)
    plain = model.generate(input_ids=prompts, attention_mask=prompt_mask, **kwargs)
    prefill_once(model.get_base_model())
    assert torch.equal(model.generate(input_ids=prompts, attention_mask=prompt_mask, **kwargs), plain)


def test_the_shuffle_moves_whole_groups():
    from trl.trainer.utils import shuffle_sequence_dict

    from tifa_lite.methods.grpo_groups import shuffle_whole_groups

    torch.manual_seed(0)
    rows = torch.arange(12).repeat_interleave(1)  # 4 groups of 3: rows 0-2, 3-5, 6-8, 9-11
    batch = {"ids": rows[:, None].repeat(1, 2), "prompts": [f"p{i // 3}" for i in range(12)], "none": None,
             "scalar": torch.tensor(7)}
    out = shuffle_whole_groups(batch, 3, shuffle_rows=shuffle_sequence_dict)
    order = out["ids"][:, 0]
    assert sorted(order.tolist()) == list(range(12)) and order.tolist() != list(range(12))  # a permutation, not identity
    for start in range(0, 12, 3):
        group = order[start:start + 3]
        assert group.tolist() == list(range(int(group[0]), int(group[0]) + 3))  # consecutive rows of one group
    assert out["prompts"] == [f"p{i // 3}" for i in order.tolist()] and out["none"] is None
    assert int(out["scalar"]) == 7
    rows_only = shuffle_whole_groups({"ids": torch.arange(10)}, 3, shuffle_rows=lambda b: {"ids": b["ids"].flip(0)})
    assert rows_only["ids"].tolist() == list(range(9, -1, -1))  # not whole groups: TRL's row shuffle


# --- the model zoo: each family's lever decision, and the levers exact where they stay on ---

ZOO = ["llama", "qwen2", "qwen3", "qwen3_moe", "qwen3_next", "qwen3_5", "mistral", "phi3", "gemma3", "glm4",
       "gpt_oss", "deepseek_v3", "smollm3"]
NOT_ATTENTION_ONLY = {"qwen3_next", "qwen3_5"}  # linear-attention layers: neither lever can be exact


def zoo_policy(folder):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    return model


def zoo_batch(generations: int = 3, vocab: int = 2000):
    """Prompts longer than the zoo's windows (8), so a window the packed mask misses shows."""
    torch.manual_seed(1)
    prompts = [torch.randint(10, vocab, (14,)), torch.randint(10, vocab, (9,))]
    rows, masks, width, completion = [], [], 14, 6
    for prompt in prompts:
        for g in range(generations):
            done = completion - g
            pad_left, pad_right = width - len(prompt), completion - done
            rows.append(torch.cat([torch.full((pad_left,), PAD), prompt, torch.randint(10, vocab, (done,)),
                                   torch.full((pad_right,), PAD)]))
            masks.append(torch.cat([torch.zeros(pad_left), torch.ones(len(prompt) + done), torch.zeros(pad_right)]))
    return torch.stack(rows), torch.stack(masks).long(), completion


def packed_probe(model):
    path = PackedPath()
    ids, mask, completion = zoo_batch()
    with torch.no_grad():
        got = path._get_per_token_logps_and_entropies(model, ids, mask, completion)[0]
        expected = TRLPath()._get_per_token_logps_and_entropies(model, ids, mask, completion)[0]
    return path._tifa_packing_probe, got, expected, mask[:, -completion:].bool()


@pytest.mark.parametrize("family", ZOO)
def test_packed_groups_are_exact_or_off_for_every_family(zoo_model_dir, family, caplog):
    """Sliding windows (Mistral and Phi-3 from config.sliding_window alone; Gemma 3 and GPT-OSS
    per layer kind) are written into the packed mask, MoE router logits are not requested, and
    linear-attention hybrids are refused by their layers: the packed log-probs equal TRL's
    padded ones, and the lever stays on, for every family but the hybrids."""
    model = zoo_policy(zoo_model_dir(family))
    probe, got, expected, scored = packed_probe(model)
    torch.testing.assert_close(got[scored], expected[scored], rtol=1e-5, atol=1e-5)
    if family in NOT_ATTENTION_ONLY:
        assert probe.off_reason == "linear_attention layers"
        assert f"grpo.pack_groups off for {model.config.model_type}: linear_attention layers" in caplog.text
    else:
        assert probe.off_reason is None and probe.checked


@pytest.mark.parametrize("family", ZOO)
def test_prefill_once_is_exact_or_off_for_every_family(zoo_model_dir, family):
    from transformers import AutoModelForCausalLM

    folder = zoo_model_dir(family)
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    shared = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    probe = prefill_once(shared)
    ids, mask, completion = zoo_batch()
    prompts, prompt_mask = ids[:, :-completion], mask[:, :-completion]
    # transformers' own generate cannot pair Qwen3-MoE's load-balancing loss with a left-padded
    # batch's mask (the loss is not used in generation; TRL and the kit's server leave it off)
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=PAD, use_cache=True, **no_router_logits(plain))
    assert torch.equal(shared.generate(input_ids=prompts, attention_mask=prompt_mask, **kwargs),
                       plain.generate(input_ids=prompts, attention_mask=prompt_mask, **kwargs))
    if family in NOT_ATTENTION_ONLY:
        assert probe.off_reason == "linear_attention layers"
    else:
        assert probe.off_reason is None and probe.checked


def test_the_probe_catches_a_window_the_mask_misses(zoo_model_dir, monkeypatch, caplog):
    """Today's main packed Mistral (a window in config.sliding_window, no layer_types) with a
    plain causal mask: silently different log-probs. With the window left out again, the
    first-use probe sees the difference and hands the run to TRL's path."""
    from tifa_lite.methods import grpo_groups

    monkeypatch.setattr(grpo_groups, "attention_windows", lambda text: {"full_attention": None})
    probe, got, expected, scored = packed_probe(zoo_policy(zoo_model_dir("mistral")))
    assert "packed log-probs differ from the padded forward's" in probe.off_reason
    assert "grpo.pack_groups off for mistral: packed log-probs differ" in caplog.text
    torch.testing.assert_close(got[scored], expected[scored], rtol=1e-5, atol=1e-5)  # TRL's values, not the packed


def test_the_probe_catches_the_moe_load_balancing_crash(zoo_model_dir, monkeypatch):
    """Qwen3-MoE with output_router_logits: the load-balancing loss met the 4-D mask and raised
    (today's main). With router logits requested again, the probe turns the lever off instead."""
    from tifa_lite.methods import grpo_groups

    monkeypatch.setattr(grpo_groups, "no_router_logits", lambda model: {})
    probe, got, expected, scored = packed_probe(zoo_policy(zoo_model_dir("qwen3_moe")))
    assert probe.off_reason.startswith("the packed forward failed: RuntimeError")
    torch.testing.assert_close(got[scored], expected[scored], rtol=1e-5, atol=1e-5)


def test_the_probes_catch_a_hybrid_model_without_the_structural_refusal(zoo_model_dir, monkeypatch):
    """Qwen3.5's linear-attention layers: the shared prefill raised AttributeError
    ('LinearAttentionLayer' has no batch_select_indices) and packing ignored the mask in those
    layers (today's main). With the structural refusal taken away, both probes still catch it."""
    from transformers import AutoModelForCausalLM

    from tifa_lite.methods import grpo_groups

    monkeypatch.setattr(grpo_groups, "packing_refusal", lambda model: None)
    monkeypatch.setattr(grpo_groups, "prefill_refusal", lambda model: None)
    folder = zoo_model_dir("qwen3_5")
    probe, got, expected, scored = packed_probe(zoo_policy(folder))
    assert probe.off_reason and "packed" in probe.off_reason
    torch.testing.assert_close(got[scored], expected[scored], rtol=1e-5, atol=1e-5)
    shared = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prefill = prefill_once(shared)
    ids, mask, completion = zoo_batch()
    out = shared.generate(input_ids=ids[:, :-completion], attention_mask=mask[:, :-completion], max_new_tokens=2,
                          do_sample=False, pad_token_id=PAD)
    assert out.shape[1] == ids.shape[1] - completion + 2
    assert prefill.off_reason.startswith("the shared prefill failed: AttributeError")


def test_the_dequantised_copy_checks_itself(tiny_model_dir, monkeypatch):
    """The copy's first generate compares it with the 4-bit layers; a copy that computed
    something else (here: every dense weight doubled) is switched off and generation runs on
    the 4-bit layers. (Where the CPU has AVX512-BF16, bitsandbytes' 4-bit matmul is a fused
    kernel of its own, which the probe also tells apart, and the plan's ``auto`` leaves the copy
    off; here the layers take the dequantise-and-matmul path the copy reproduces.)"""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from tifa_lite.modeling import dequantized

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)

    def load():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quant, dtype=torch.float32)
        for layer in dequantized.linear4bit_layers(model):
            layer.support_avx512bf16_for_cpu = False
        return model

    model = load()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    inputs = tokenizer(["Once upon a time"], return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    exact = dequantized.dequantize_for_generation(model)
    assert torch.equal(model.generate(**inputs, max_new_tokens=3, do_sample=False), expected)
    assert exact.checked and exact.off_reason is None

    wrong = dequantized.dequantized_weight
    monkeypatch.setattr(dequantized, "dequantized_weight", lambda layer, dtype: 2 * wrong(layer, dtype))
    other = load()
    probe = dequantized.dequantize_for_generation(other)
    assert torch.equal(other.generate(**inputs, max_new_tokens=3, do_sample=False), expected)
    assert "differ from the 4-bit layers'" in probe.off_reason

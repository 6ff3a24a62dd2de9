"""A GRPO group's prompt computed once: the packed loss forward and the shared prefill give
what TRL's padded paths give — log-probs, entropies, gradients, generated tokens."""

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from tifa_lite.methods.grpo_groups import PackedGroupLogps, pack_groups, packable, prefill_once

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
    from transformers import Qwen2Config, Qwen2ForCausalLM

    windowed = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                            sliding_window=8, max_window_layers=0))
    assert not packable(windowed)
    assert packable(tiny_policy("sdpa")) and not packable(SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2")))


@pytest.mark.parametrize("sample", [False, True])
def test_prefill_once_generates_what_generate_generates(sample):
    model = tiny_policy("sdpa").eval()
    shared = tiny_policy("sdpa").eval()  # the same seed: the same weights (a deepcopy would share TRL's patched forward)
    prefill_once(shared)
    ids, mask, completion = group_batch()
    prompts, prompt_mask = ids[:, :-completion], mask[:, :-completion]
    kwargs = dict(max_new_tokens=6, do_sample=sample, pad_token_id=PAD, output_scores=True,
                  return_dict_in_generate=True, use_cache=True)
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

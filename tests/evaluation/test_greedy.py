"""Plain greedy ignores the sampling a merged folder ships in generation_config.json."""

from __future__ import annotations

import torch

from tifa_lite.evaluation.greedy import plain_greedy


def _argmax_loop(model, ids: torch.Tensor, n: int) -> list[int]:
    out = ids
    with torch.no_grad():
        for _ in range(n):
            nxt = model(input_ids=out).logits[0, -1].argmax()
            out = torch.cat([out, nxt.view(1, 1)], dim=1)
    return out[0, ids.shape[1]:].tolist()


def test_plain_greedy_is_the_argmax_whatever_the_generation_config(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    # What a merged folder carries from a role-play recipe, and more a config may hold.
    model.generation_config.repetition_penalty = 1.17
    model.generation_config.no_repeat_ngram_size = 2
    model.generation_config.min_new_tokens = 12
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    expected = _argmax_loop(model, ids, 12)
    with torch.no_grad():
        penalised = model.generate(input_ids=ids, do_sample=False, max_new_tokens=12, eos_token_id=None)[0, 6:].tolist()
        plain = model.generate(input_ids=ids, **plain_greedy(12, eos_token_id=None))[0, 6:].tolist()
    assert plain == expected
    assert penalised != expected  # the penalties do change this decode: the test can tell


def test_gsm8k_generation_uses_plain_greedy(monkeypatch):
    from tifa_lite.evaluation import gsm8k

    seen = {}

    class Model:
        def parameters(self):
            yield torch.zeros(1)

        def generate(self, **kwargs):
            seen.update(kwargs)
            return kwargs["input_ids"]

    class Tok:
        padding_side = "right"
        pad_token_id = 0

        def apply_chat_template(self, p, **kw):
            return "x"

        def __call__(self, texts, **kw):
            class Enc(dict):
                def to(self, device):
                    return self
            return Enc(input_ids=torch.zeros((len(texts), 2), dtype=torch.long))

        def batch_decode(self, t, **kw):
            return [""] * len(t)

    gsm8k.generate_greedy(Model(), Tok(), [[{"role": "user", "content": "1+1"}]], max_new_tokens=5)
    assert seen["repetition_penalty"] == 1.0 and seen["do_sample"] is False and seen["no_repeat_ngram_size"] == 0

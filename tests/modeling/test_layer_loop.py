"""model.layer_loop: the recipe key, the looped stack, and the KV cache (one slot per pass)."""

import pytest
import torch
from pydantic import ValidationError

from tifa_lite.config import load_recipe
from tifa_lite.config.schema import LayerLoopConfig
from tifa_lite.errors import ConfigError
from tifa_lite.modeling.layer_loop import SharedPass, apply_layer_loop, check_trainable, source_layers


def tiny(kind: str, layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval()
    # sliding window on the last two layers, shorter than the test's sequences: layer_types matter
    return Qwen2ForCausalLM(Qwen2Config(**common, use_sliding_window=True, sliding_window=5,
                                        max_window_layers=layers // 2)).eval()


def with_lora(model):
    """A LoRA with non-zero B (init_lora_weights=False), so every pass's adapter changes the output."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)).eval()


def greedy(model, ids, use_cache: bool):
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                         use_cache=use_cache, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def test_schema_names_and_checks_the_span():
    config = load_recipe({}, ["model.layer_loop.start=10", "model.layer_loop.end=20", "model.layer_loop.repeats=2"])
    assert (config.model.layer_loop.start, config.model.layer_loop.end, config.model.layer_loop.repeats) == (10, 20, 2)
    with pytest.raises(ValidationError, match="end=10 must be greater than start=10"):
        LayerLoopConfig(start=10, end=10)
    with pytest.raises(ValidationError):
        LayerLoopConfig(start=1, end=3, repeats=1)  # one pass is no loop
    with pytest.raises(ConfigError, match="layer_loop"):
        load_recipe({}, ["model.layer_loop.start=1", "model.layer_loop.end=3", "model.layer_loop.passes=2"])


def test_span_is_checked_against_the_models_depth():
    with pytest.raises(ConfigError, match=r"model.layer_loop: end=5 but the model has 4 layers.*at most 4"):
        apply_layer_loop(tiny("llama"), LayerLoopConfig(start=2, end=5))


def test_a_looped_full_fine_tune_is_refused():
    config = load_recipe({}, ["model.layer_loop.start=1", "model.layer_loop.end=2", "quant.bits=null", "lora.enabled=false"])
    with pytest.raises(ConfigError, match="lora.enabled=true"):
        check_trainable(config)


def test_source_map_runs_the_span_repeats_times():
    assert source_layers(6, 2, 4, 3) == [0, 1, 2, 3, 2, 3, 2, 3, 4, 5]
    assert len(source_layers(30, 10, 20, 2)) == 40


@pytest.mark.parametrize("per_pass", [True, False])
def test_stack_config_and_weights(per_pass):
    model = tiny("qwen2")
    before = {id(p) for p in model.parameters()}
    types = list(model.config.layer_types)
    apply_layer_loop(model, LayerLoopConfig(start=1, end=3, repeats=2, lora_per_pass=per_pass))
    assert model.config.num_hidden_layers == 6 and len(model.model.layers) == 6
    assert model.config.layer_types == [types[i] for i in (0, 1, 2, 1, 2, 3)]
    # base weights shared, not copied
    assert {id(p) for p in model.parameters()} == before
    assert isinstance(model.model.layers[3], SharedPass) != per_pass
    model = with_lora(model)
    lora_a = [n for n, _ in model.named_parameters() if "q_proj.lora_A" in n]
    assert len(lora_a) == (6 if per_pass else 4)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("per_pass", [True, False])
def test_cached_and_uncached_generation_agree(kind, per_pass):
    model = tiny(kind)
    apply_layer_loop(model, LayerLoopConfig(start=1, end=3, repeats=3, lora_per_pass=per_pass))
    model = with_lora(model)
    ids = torch.randint(3, 96, (1, 7), generator=torch.Generator().manual_seed(2))
    assert greedy(model, ids, use_cache=True) == greedy(model, ids, use_cache=False)
    # and each pass wrote its own cache slot
    out = model(input_ids=ids, use_cache=True)
    assert len(out.past_key_values.layers) == 8
    keys = [layer.keys for layer in out.past_key_values.layers]
    assert not torch.equal(keys[1], keys[3]) and not torch.equal(keys[3], keys[5])


def test_slot_cache_is_what_keeps_the_cache_right():
    """Control: a shared pass writing into its first pass's slot (what a shared layer_idx does)
    makes cached generation diverge, so the test above can fail."""
    from tifa_lite.modeling import layer_loop

    model = tiny("llama")
    apply_layer_loop(model, LayerLoopConfig(start=1, end=3, repeats=3, lora_per_pass=False))
    ids = torch.randint(3, 96, (1, 7), generator=torch.Generator().manual_seed(2))
    uncached = greedy(model, ids, use_cache=False)
    original = layer_loop.SlotCache.update
    try:
        layer_loop.SlotCache.update = lambda self, k, v, idx, *a, **kw: self._cache.update(k, v, idx, *a, **kw)
        assert greedy(model, ids, use_cache=True) != uncached
    finally:
        layer_loop.SlotCache.update = original


def test_shared_passes_are_refused_on_a_model_with_recurrent_layers(zoo_model_dir):
    """Qwen3.5's linear-attention layers keep conv and recurrent states by layer index: a shared
    pass would reuse its first pass's state (cached generation 3.97 logits off the uncached
    forward on the tiny model). Refused, naming the family; clones (lora_per_pass) are exact."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = zoo_model_dir("qwen3_5")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with pytest.raises(ConfigError, match="lora_per_pass=false on qwen3_5_text: its linear_attention layers"):
        apply_layer_loop(model, LayerLoopConfig(start=0, end=2, repeats=2, lora_per_pass=False))
    apply_layer_loop(model, LayerLoopConfig(start=0, end=2, repeats=2, lora_per_pass=True))
    inputs = AutoTokenizer.from_pretrained(folder)(["Once upon a time there was a village"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_scores=True,
                             return_dict_in_generate=True)
        uncached = model(input_ids=out.sequences[:, :-1]).logits[0, -1]
    torch.testing.assert_close(out.scores[-1][0], uncached, rtol=1e-4, atol=1e-4)

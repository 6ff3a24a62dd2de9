"""The zoo's members are the families they claim to be, with the traits they are in the zoo for."""

import pytest

from tifa_lite.modeling.zoo import FAMILIES, WINDOW, missing_reason, zoo_config


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_member_loads_as_its_family_and_generates(zoo_model_dir, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = zoo_model_dir(family)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == FAMILIES[family].model_type
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(["The quick brown fox jumps over the lazy dog again"], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_the_traits_the_zoo_is_for_are_in_the_configs():
    vocab = 1000
    assert zoo_config("mistral", vocab).sliding_window == WINDOW
    assert getattr(zoo_config("mistral", vocab), "layer_types", None) is None
    assert zoo_config("qwen3_moe", vocab).output_router_logits is True
    assert "linear_attention" in zoo_config("qwen3_5", vocab).layer_types
    assert set(zoo_config("gemma3", vocab).layer_types) == {"sliding_attention", "full_attention"}
    assert zoo_config("gpt_oss", vocab).num_local_experts > 1
    assert zoo_config("deepseek_v3", vocab).kv_lora_rank > 0


def test_a_family_this_transformers_lacks_is_named(monkeypatch):
    from tifa_lite.modeling import zoo

    monkeypatch.setitem(zoo.FAMILIES, "future", zoo.Family("future", "no_such_model_type", "test"))
    import transformers

    assert missing_reason("future") == (f"transformers {transformers.__version__} has no 'no_such_model_type' model "
                                        "(future)")

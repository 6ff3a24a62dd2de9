"""Model shapes from configs only: parameter counts agree with transformers' own models."""

from __future__ import annotations

import json

import pytest

from tifa_lite.config.schema import ModelConfig
from tifa_lite.errors import ConfigError
from tifa_lite.planner import known_shape, model_shape_from_config_dict, read_model_shape
from tifa_lite.planner import shapes


def test_total_params_match_a_real_llama(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    shape = read_model_shape(ModelConfig(name_or_path=str(tiny_model_dir)))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.total_params == model.num_parameters()
    assert shape.source.endswith("config.json")


def test_total_params_match_a_real_qwen2_with_qkv_bias_and_untied_head():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=500, tie_word_embeddings=False)
    shape = model_shape_from_config_dict(cfg.to_dict(), name="tiny-qwen2")
    assert shape.qkv_bias and not shape.tied
    assert shape.total_params == Qwen2ForCausalLM(cfg).num_parameters()


@pytest.mark.parametrize(
    "name, billions",
    [  # published parameter counts
        ("meta-llama/Llama-3.1-8B-Instruct", 8.03),
        ("meta-llama/Llama-2-7b-hf", 6.74),
        ("Qwen/Qwen2.5-7B-Instruct", 7.62),
        ("Qwen/Qwen2.5-0.5B-Instruct", 0.494),
        ("Qwen/Qwen2.5-1.5B-Instruct", 1.54),
        ("smollm2-135m-instruct", 0.1345),
    ],
)
def test_bundled_configs_give_published_sizes(name, billions):
    assert known_shape(name).total_params / 1e9 == pytest.approx(billions, rel=0.01)


def test_hub_ids_plan_offline_and_modelscope_ids_map_to_the_same_shape():
    shape = read_model_shape(ModelConfig(name_or_path="Qwen/Qwen2.5-7B-Instruct"))
    assert shape.source.startswith("bundled")
    assert read_model_shape(ModelConfig(name_or_path="qwen/Qwen2.5-7B-Instruct", source="modelscope")).hidden == 3584


def test_embedded_model_is_read_from_its_converted_config(embedded_model_dir):
    shape = read_model_shape(ModelConfig(name_or_path="smollm2-135m-instruct"))
    assert shape.source == str(embedded_model_dir / "config.json")
    assert (shape.hidden, shape.layers, shape.kv_heads, shape.vocab) == (576, 30, 3, 49152)


def test_embedded_names_mirror_the_modeling_package():
    from tifa_lite.modeling import embedded

    assert set(shapes.EMBEDDED) == set(embedded.EMBEDDED_MODELS)


def test_a_config_without_shape_keys_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="hidden_size"):
        read_model_shape(ModelConfig(name_or_path=str(tmp_path)))


def test_gguf_base_asks_for_the_hf_id(tmp_path):
    with pytest.raises(ConfigError, match="GGUF"):
        read_model_shape(ModelConfig(name_or_path=str(tmp_path / "m.gguf")))

"""The planner's terms against what a training step of the model zoo really keeps, under the T4
and A10 rehearsals (tifa_lite.planner.measure; the whole table: benchmarks/planner_terms.py)."""

import pytest

from tifa_lite.errors import ConfigError
from tifa_lite.planner.measure import measure
from tifa_lite.planner.shapes import model_shape_from_config_dict

# One of each trait the planner models, each method and card: the control (a T4's fp32 stream and KV
# cache, the packed mask), fused projections with a sliding-window cache, Gemma's four norms (with q/k
# norms) that return their input's dtype, GLM's fused MLP with post-norms and biases.
CASES = [("llama", "t4", "grpo"), ("phi3", "a10", "grpo"), ("gemma3", "t4", "sft"), ("glm4", "a10", "dpo")]


@pytest.mark.parametrize("family,card,method", CASES)
def test_every_planned_term_is_within_15_percent_of_its_measurement(zoo_model_dir, family, card, method):
    terms = measure(zoo_model_dir(family), card, method)
    expected = {"activations", "LoRA params", "LoRA grads", "optimizer states"}
    if method == "grpo":
        expected |= {"generation KV cache", "packed attention mask"}
    assert set(terms) == expected
    off = {k: round(p / m, 3) for k, (p, m) in terms.items() if not 0.85 <= p / m <= 1.15}
    assert not off, f"planned / measured outside ±15 %: {off}"


@pytest.mark.parametrize("family,reason", [("qwen3_moe", "mixture of experts"), ("deepseek_v3", "mixture of experts"),
                                           ("qwen3_next", "mixture of experts"), ("qwen3_5", "linear-attention")])
def test_families_the_planner_cannot_plan_are_refused_by_name(family, reason):
    from tifa_lite.modeling.zoo import missing_reason, zoo_config

    if missing_reason(family):
        pytest.skip(missing_reason(family))
    with pytest.raises(ConfigError, match=f"cannot plan .*{reason}"):
        model_shape_from_config_dict(zoo_config(family, 1000).to_dict(), name=family)


def test_auto_fit_trains_a_refused_family_as_written(tmp_path, capsys):
    from types import SimpleNamespace

    from tifa_lite.config import load_recipe
    from tifa_lite.modeling.zoo import missing_reason, zoo_config
    from tifa_lite.planner import apply_auto_fit

    if missing_reason("qwen3_moe"):
        pytest.skip(missing_reason("qwen3_moe"))
    zoo_config("qwen3_moe", 1000).save_pretrained(tmp_path)  # the planner reads config.json only
    config = load_recipe({"model": {"name_or_path": str(tmp_path), "source": "local"},
                          "train": {"auto_fit": True}})
    cpu = SimpleNamespace(device="cpu")
    assert apply_auto_fit(config, cpu) is config
    assert "cannot plan" in capsys.readouterr().out

"""Escape hatches typed by what they go to: TRL config fields, reward parameters."""

import dataclasses
import functools

import pytest

from tifa_lite.config.passthrough import coerce, dataclass_fields, keyword_parameters
from tifa_lite.errors import ConfigError


@dataclasses.dataclass
class Target:
    epsilon_high: float | None = None
    num_iterations: int = 1
    mask_truncated_completions: bool = False
    loss_type: str = "dapo"
    reward_weights: list[float] | None = None


def test_values_take_the_field_types():
    typed = coerce({"epsilon_high": "2e-1", "num_iterations": "2", "mask_truncated_completions": "true",
                    "loss_type": 1, "reward_weights": ["1", 0.5]}, dataclass_fields(Target), "grpo.trl_args", "Target")
    assert typed == {"epsilon_high": 0.2, "num_iterations": 2, "mask_truncated_completions": True,
                     "loss_type": "1", "reward_weights": [1.0, 0.5]}
    assert type(typed["epsilon_high"]) is float


def test_unknown_name_is_refused_with_the_closest():
    with pytest.raises(ConfigError, match=r"^grpo.trl_args.epsilon_hihg: Target has no setting 'epsilon_hihg' "
                                          r"\(did you mean 'epsilon_high'\?\)"):
        coerce({"epsilon_hihg": 0.2}, dataclass_fields(Target), "grpo.trl_args", "Target")


def test_value_of_the_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"^grpo.trl_args.num_iterations='many': Target expects int"):
        coerce({"num_iterations": "many"}, dataclass_fields(Target), "grpo.trl_args", "Target")
    with pytest.raises(ConfigError, match=r"num_iterations=2.5: Target expects int \(.*fractional"):
        coerce({"num_iterations": 2.5}, dataclass_fields(Target), "grpo.trl_args", "Target")


def test_parameters_of_functions_partials_and_callable_objects():
    def reward(completions, score: float = 0.5, *, bonus: "int" = 1, **kwargs):
        return []

    class Judge:
        def __call__(self, prompts, completions, threshold: float = 0.0, **kwargs):
            return []

    def make(path: str, batch_size: int = 8, **context):
        return reward

    assert keyword_parameters(reward, exclude=("completions",)) == {"score": float, "bonus": int}
    assert keyword_parameters(Judge(), exclude=("prompts", "completions")) == {"threshold": float}
    assert keyword_parameters(functools.partial(make, max_completion_length=9)) == {"path": str, "batch_size": int}
    assert coerce({"batch_size": "16"}, keyword_parameters(make), "k", "reward") == {"batch_size": 16}


def test_unannotated_parameters_pass_values_as_they_are():
    def reward(completions, bonus=1.0):
        return []

    assert coerce({"bonus": "2e-1"}, keyword_parameters(reward), "k", "reward") == {"bonus": "2e-1"}

"""The checks a run makes before its model loads: the step count a schedule will take, and
the warning for a run whose only step falls in the warm-up."""

import logging

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.methods.precheck import total_steps, warn_if_no_step


def config(**overrides):
    base = {"train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1, "train.global_batch_size": None}
    return load_recipe({}, {**base, **overrides})


@pytest.mark.parametrize("overrides, rows, steps", [
    ({"train.max_steps": 5}, None, 5),
    ({"train.max_steps": -1}, None, None),  # epochs without the data: not known yet
    ({"train.max_steps": -1, "train.num_epochs": 1}, 4, 2),
    ({"train.max_steps": -1, "train.num_epochs": 1, "train.gradient_accumulation_steps": 2}, 4, 1),
    ({"train.max_steps": -1, "train.num_epochs": 3}, 3, 6),
])
def test_total_steps(overrides, rows, steps):
    assert total_steps(config(**overrides), rows) == steps


@pytest.mark.parametrize("overrides, warned", [
    ({"train.max_steps": 1, "train.warmup_ratio": 0.03}, True),
    ({"train.max_steps": 1, "train.warmup_ratio": 0.0}, False),
    ({"train.max_steps": 1, "train.warmup_ratio": 0.5, "train.lr_scheduler": "constant"}, False),  # no warm-up
    ({"train.max_steps": 2, "train.warmup_ratio": 0.5}, False),  # the second step has a rate
])
def test_warning_only_when_every_step_is_at_learning_rate_zero(overrides, warned, caplog):
    with caplog.at_level(logging.WARNING):
        warn_if_no_step(config(**overrides), rows=None)
    assert any("learning rate 0" in r.getMessage() for r in caplog.records) == warned

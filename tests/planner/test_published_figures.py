"""The planner against the published GPU figures recorded in BENCHMARKS.md: a change to the
memory model that moves any of them outside ±25% fails here, not silently in the docs."""

import importlib.util
from pathlib import Path

import pytest

from tifa_lite.planner import estimate

VALIDATION = Path(__file__).resolve().parents[2] / "benchmarks" / "planner_validation.py"


def published_cases():
    spec = importlib.util.spec_from_file_location("planner_validation", VALIDATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.published_cases()


CASES = published_cases()


@pytest.mark.parametrize("name, unit, value, basis, plan_in", CASES, ids=[c[0] for c in CASES])
def test_published_figure_within_25_percent(name, unit, value, basis, plan_in):
    plan = estimate(plan_in)
    gib = plan.peak_gib if basis == "card" else plan.allocator_peak_gib
    predicted = gib if unit == "GiB" else gib * 2**30 / 1e9
    assert abs(predicted / value - 1) <= 0.25, f"{name}: predicted {predicted:.2f} {unit} vs published {value} {unit}"


def test_all_six_published_figures_are_checked():
    assert len(CASES) == 6

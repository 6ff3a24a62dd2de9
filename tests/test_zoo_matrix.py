"""The model-family matrix (tifa_lite.zoo_matrix) in the suite: every zoo family takes a QLoRA
SFT step, a DPO step, a GRPO step with the default levers, a merge with its self-check and a
served chat request, and every card (CPU fp32, T4 and A10 rehearsals) is covered for every
step. The default suite runs a rotation (each family's steps spread over the three cards);
the whole family × card × step product is the opt-in group ``pytest -m zoo_full``, which
``benchmarks/zoo_matrix.py`` prints as the BENCHMARKS.md table.

A cell is ok, ok with a lever that switched itself off for a structural reason (hybrid
linear-attention layers), or refused before loading (the merge of an adapter on fused MoE
expert weights); it never fails mid-run, and no lever is
switched off by its first-use probe (which would mean the lever computes something else)."""

from __future__ import annotations

import pytest

from tifa_lite.modeling.zoo import FAMILIES
from tifa_lite.zoo_matrix import CARDS, rotation, run_cell

FAMILY_NAMES = list(FAMILIES)
# Levers that are off by the model's structure, with the reason they must give.
STRUCTURALLY_OFF = {"qwen3_next": "linear_attention layers", "qwen3_5": "linear_attention layers"}
# all-linear adapts these families' stacked expert weights as parameters; the merge refuses them by name.
MERGE_REFUSED = {"qwen3_moe", "qwen3_next", "deepseek_v3"}


def check(cell, family):
    if cell.step == "merge" and family in MERGE_REFUSED:
        assert cell.status == "refused" and "fused MoE expert weights of" in cell.detail, cell.row()
        return
    assert cell.status == "ok", cell.row()
    if cell.step == "grpo" and cell.detail:
        # only a structural refusal may switch a lever off; a probe's difference is a defect
        assert family in STRUCTURALLY_OFF and "differ" not in cell.detail and "failed" not in cell.detail, cell.row()
        assert STRUCTURALLY_OFF[family] in cell.detail, cell.row()
    if cell.step == "grpo" and family in STRUCTURALLY_OFF:
        assert "pack_groups off" in cell.detail and "prefill_once off" in cell.detail, cell.row()


@pytest.mark.slow
@pytest.mark.parametrize("family, card, steps", rotation(FAMILY_NAMES),
                         ids=[f"{f}-{c}-{'+'.join(s)}" for f, c, s in rotation(FAMILY_NAMES)])
def test_every_family_takes_every_step_on_every_card(zoo_model_dir, tmp_path, family, card, steps):
    for step in steps:
        check(run_cell(family, card, step, zoo_model_dir(family), tmp_path), family)


def test_the_rotation_covers_every_family_step_and_card():
    seen = {(f, c, s) for f, c, steps in rotation(FAMILY_NAMES) for s in steps}
    for family in FAMILY_NAMES:
        assert {s for f, _, s in seen if f == family} == {"sft", "dpo", "grpo", "merge", "serve"}
    for step in ("sft", "dpo", "grpo", "merge", "serve"):
        assert {c for _, c, s in seen if s == step} == set(CARDS)


@pytest.mark.zoo_full
@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_whole_matrix(request, zoo_model_dir, tmp_path, family, card):
    if "zoo_full" not in (request.config.getoption("-m") or ""):
        pytest.skip("opt-in group (about 20 minutes on 2 cores): pytest -m zoo_full")
    for step in ("sft", "merge", "serve", "dpo", "grpo"):
        check(run_cell(family, card, step, zoo_model_dir(family), tmp_path), family)

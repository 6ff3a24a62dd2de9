"""Pipelines: override routing, stage wiring (each stage's base is the previous merged
model), resumability, and the real four-stage Tifa pipeline end to end on the CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tifa_lite.errors import ConfigError
from tifa_lite.training.pipeline import load_pipeline, plan, run_pipeline

REPO = Path(__file__).resolve().parents[2]
TIFA_PIPELINE = REPO / "recipes" / "pipelines" / "tifa_lite.yaml"


def write_pipeline(tmp_path, **extra):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"train": {"method": "sft"}, "data": {"path": "x.jsonl"}}))
    grpo = tmp_path / "g.yaml"
    grpo.write_text(yaml.safe_dump({"train": {"method": "grpo"}}))
    spec = {
        "output_dir": str(tmp_path / "out"),
        "model": "smollm2-135m-instruct",
        "overrides": {"train.max_steps": 5},
        "stages": [
            {"name": "one", "recipe": "r.yaml", "overrides": {"train.learning_rate": 1e-4}},
            {"name": "two", "recipe": "g.yaml", "overrides": {"model.name_or_path": "ignored"}},
        ],
        **extra,
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_plan_chains_merged_models(tmp_path):
    spec, folder = load_pipeline(write_pipeline(tmp_path), ["two.train.max_steps=7", "*.data.limit=3"])
    one, two = plan(spec, folder)
    out = (tmp_path / "out").resolve()
    assert one["recipe"] == (tmp_path / "r.yaml").resolve()
    assert one["overrides"]["model.name_or_path"] == "smollm2-135m-instruct"
    assert one["overrides"]["train.max_steps"] == 5 and one["overrides"]["train.learning_rate"] == 1e-4
    assert one["overrides"]["data.limit"] == 3
    assert one["adapter_dir"] == out / "00_one" / "adapter" and one["merged_dir"] == out / "00_one" / "merged"
    # Stage 2 starts from stage 1's merged model; a stage override cannot cut the chain.
    assert two["overrides"]["model.name_or_path"] == str(out / "00_one" / "merged")
    assert two["overrides"]["model.source"] == "local"
    assert two["overrides"]["train.max_steps"] == 7
    assert two["overrides"]["train.output_dir"] == str(out / "01_two" / "adapter")


def test_prepare_and_placeholders(tmp_path):
    spec, folder = load_pipeline(
        write_pipeline(tmp_path),
        ['two.prepare=[pairs, anti-repetition, --model, "{previous}", --output, "{stage_dir}/p.jsonl"]',
         "two.data.path={stage_dir}/p.jsonl", "one.merge=true"],
    )
    _, two = plan(spec, folder)
    stage_dir = (tmp_path / "out" / "01_two").resolve()
    previous = (tmp_path / "out" / "00_one" / "merged").resolve()
    assert two["prepare"] == ["pairs", "anti-repetition", "--model", str(previous), "--output", f"{stage_dir}/p.jsonl"]
    assert two["overrides"]["data.path"] == f"{stage_dir}/p.jsonl"
    assert "prepare" not in two["overrides"] and "merge" not in plan(spec, folder)[0]["overrides"]


def test_budget_is_per_method(tmp_path):
    spec, folder = load_pipeline(write_pipeline(tmp_path), ["budget=cpu-tiny"])
    one, two = plan(spec, folder)
    assert one["overrides"]["model.name_or_path"] == "smollm2-135m-instruct"  # budget beats the pipeline model
    assert "grpo.num_generations" not in one["overrides"]
    assert two["overrides"]["grpo.num_generations"] == 2
    assert one["overrides"]["train.max_steps"] == 5  # pipeline overrides come after the budget


@pytest.mark.parametrize(
    "override, message",
    [
        ("tow.train.max_steps=1", "'tow' is not a stage or pipeline key (did you mean 'two'?)"),
        ("output_dirr=x", "did you mean 'output_dir'?"),
    ],
)
def test_bad_overrides(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_pipeline(write_pipeline(tmp_path), [override])


def test_invalid_pipelines(tmp_path):
    path = write_pipeline(tmp_path, stages=[{"name": "a", "recipe": "r.yaml"}, {"name": "a", "recipe": "r.yaml"}])
    with pytest.raises(ConfigError, match="repeated: \\['a'\\]"):
        load_pipeline(path)
    path = write_pipeline(tmp_path, stages=[{"name": "a", "recipe": "r.yaml", "merge": False}, {"name": "b", "recipe": "r.yaml"}])
    with pytest.raises(ConfigError, match="merge: false is only allowed on the last stage"):
        plan(*load_pipeline(path))
    path = write_pipeline(tmp_path, stages=[{"name": "a", "recipe": "missing.yaml"}])
    with pytest.raises(ConfigError, match="stage recipe missing.yaml: not found"):
        plan(*load_pipeline(path))
    path = write_pipeline(tmp_path, stges=[])
    with pytest.raises(ConfigError, match="invalid pipeline"):
        load_pipeline(path)


def test_shipped_pipeline_is_the_tifa_road():
    spec, folder = load_pipeline(TIFA_PIPELINE)
    steps = plan(spec, folder)
    methods = [yaml.safe_load(Path(s["recipe"]).read_text())["train"]["method"] for s in steps]
    assert methods == ["cpt", "sft", "grpo", "dpo"]
    grpo = next(s for s in spec.stages if s.name == "grpo")
    assert len(grpo.overrides["grpo.rewards"]) >= 3


def test_reasoning_cpu_pipeline_is_cold_start_then_the_unchanged_r1_rewards():
    from tifa_lite.config import load_recipe
    from tifa_lite.rewards import R1_ZERO_REWARDS

    spec, folder = load_pipeline(REPO / "recipes" / "pipelines" / "reasoning_cpu.yaml")
    sft, grpo = [load_recipe(s["recipe"], s["overrides"]) for s in plan(spec, folder)]
    assert (sft.train.method, sft.data.path) == ("sft", "data/cot_gsm8k_sample.jsonl")
    assert grpo.train.method == "grpo" and grpo.model.name_or_path.endswith("00_cot_sft/merged")
    assert [(r.name, r.weight) for r in grpo.grpo.rewards] == [(n, 1.0) for n in R1_ZERO_REWARDS]
    assert (grpo.grpo.loss_type, grpo.grpo.beta, grpo.data.system_prompt) == ("grpo", 0.04, None)


@pytest.mark.slow
def test_tifa_pipeline_end_to_end_on_cpu(tmp_path, embedded_model_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # recipes name their data relative to the checkout
    overrides = [
        f"output_dir={tmp_path / 'run'}", "budget=cpu-tiny", "merge_check=false", "*.train.max_steps=1",
        # The shipped anti-repetition builder, shrunk: short samples often show no repetition gap
        # at all, so --min-gap 0 keeps every prompt whose samples differ (sampled at temperature 0.9,
        # they do) instead of making the test depend on the model happening to loop.
        'dpo.prepare=[pairs, anti-repetition, --model, "{previous}", --data, data/roleplay_sheldon_sample.jsonl, '
        '--limit, "2", --samples, "3", --max-new-tokens, "16", --min-gap, "0", --min-units, "1", '
        '--out, "{stage_dir}/antirepeat_pairs.jsonl"]',
    ]
    result = run_pipeline(TIFA_PIPELINE, overrides)
    assert [s.status for s in result.stages] == ["trained"] * 4
    previous = None
    for stage in result.stages:
        resolved = yaml.safe_load((stage.adapter_dir / "resolved_config.yaml").read_text())
        assert resolved["train"]["max_steps"] == 1
        if previous is not None:
            assert resolved["model"]["name_or_path"] == str(previous.merged_dir)
        assert (stage.merged_dir / "config.json").is_file()
        assert json.loads((stage.merged_dir / "merge_report.json").read_text())["base"] == (
            str(previous.merged_dir) if previous else str(embedded_model_dir)
        )
        previous = stage
    # DPO trained on pairs sampled from the GRPO stage's merged model.
    pairs = (tmp_path / "run" / "03_dpo" / "antirepeat_pairs.jsonl").read_text().splitlines()
    assert pairs and (tmp_path / "run" / "03_dpo" / "prepare.done").is_file()
    assert all(json.loads(line)["builder"] == "anti_repetition" for line in pairs)
    assert str(result.stages[2].merged_dir) in (tmp_path / "run" / "03_dpo" / "prepare.done").read_text()
    summary = json.loads((tmp_path / "run" / "pipeline_summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["cpt", "cot_sft", "grpo", "dpo"]

    # Resume: complete stages are skipped; a stage whose merge was lost is only merged.
    shutil.rmtree(result.stages[-1].merged_dir)
    again = run_pipeline(TIFA_PIPELINE, overrides)
    assert [s.status for s in again.stages] == ["skipped (complete)"] * 3 + ["merged only"]
    assert again.final_model == result.stages[-1].merged_dir and (again.final_model / "config.json").is_file()

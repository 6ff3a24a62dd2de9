"""Real SIGKILLs at a chosen point of each writing stage. A kill runs no cleanup; what it
leaves must be recognised by the next run of the same output: removed (temporary names
carry the dead writer's pid) or resumed (a training run's checkpoints, a pairs journal).
After the next run succeeds nothing hidden or half-written is left."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.bad_input.conftest import RECIPE, any_match, kill_when, leftovers, run_cli
from tests.merge.conftest import train_adapter


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return train_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "lora", steps=1)


def test_kill_during_merge_then_merge_again(adapter, tmp_path):
    out = tmp_path / "merged"
    args = ["merge", "--adapter", adapter, "--output", out, "--dtype", "fp32", "--no-check"]
    kill_when(args, any_match(tmp_path, ".merged.merging-*"))
    assert not out.exists()
    assert [p for p in leftovers(tmp_path) if ".merging-" in p], "the kill came after the merge had finished"

    again = run_cli(*args)
    assert again.code == 0, again.err
    assert "Traceback" not in again.err
    assert (out / "config.json").is_file()
    assert leftovers(tmp_path) == []  # the dead merge's staging folder went with the next run


def test_merged_folder_follows_the_umask(adapter, tmp_path):
    """A merged model is the user's folder like any other: group/other may read it (umask 022)."""
    from tifa_lite.merging import merge

    old = os.umask(0o022)
    try:
        merge(adapter, tmp_path / "merged", dtype="fp32", check=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "merged").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "merged" / "config.json").stat().st_mode) == 0o644


def test_kill_during_gguf_export_then_export_again(tiny_model_dir, tmp_path):
    out = tmp_path / "model.gguf"
    args = ["export", "gguf", "--model", tiny_model_dir, "--output", out, "--no-check", "--converter", "builtin"]
    kill_when(args, any_match(tmp_path, ".model.gguf.*.partial"))
    assert not out.exists()
    assert leftovers(tmp_path), "the kill came after the export had finished"

    again = run_cli(*args)
    assert again.code == 0, again.err
    assert out.stat().st_size > 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~current_umask()
    assert leftovers(tmp_path) == []


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_live_writers_temporary_folder_is_left_alone(tmp_path):
    """Two writes of one output at once: the second must not delete the first's staging."""
    import subprocess
    import sys

    from tifa_lite.atomic import sweep_stale

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (tmp_path / f".out.merging-{live.pid}-00ff00ff").mkdir()
        (tmp_path / f".out.merging-{dead.pid}-00ff00ff").mkdir()
        (tmp_path / f".out.{dead.pid}-1234abcd.partial").write_text("half")
        (tmp_path / f".other.merging-{dead.pid}-00ff00ff").mkdir()  # another output's: not ours to judge
        removed = sweep_stale(tmp_path / "out")
    finally:
        live.kill()
        live.wait()
    assert sorted(p.name for p in removed) == sorted([f".out.merging-{dead.pid}-00ff00ff", f".out.{dead.pid}-1234abcd.partial"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".out.merging-{live.pid}-00ff00ff",
                                                                 f".other.merging-{dead.pid}-00ff00ff"])


def chat_data(path, rows: int):
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"answer {i}"}]}) + "\n"
                            for i in range(rows)))
    return path


@pytest.mark.slow
def test_kill_during_training_resumes_to_the_right_step(tiny_model_dir, tmp_path):
    data = chat_data(tmp_path / "chat.jsonl", 8)
    out = tmp_path / "run"
    args = ["train", RECIPE, f"model.name_or_path={tiny_model_dir}", f"data.path={data}", f"train.output_dir={out}",
            "train.max_steps=3", "train.save_steps=1", "train.per_device_batch_size=2", "train.global_batch_size=null",
            "train.gradient_accumulation_steps=1", "train.warmup_ratio=0", "train.gradient_checkpointing=false",
            "train.progress_bar=false", "train.auto_fit=false", "quant.bits=null", "lora.r=4", "lora.alpha=8",
            "data.max_length=64", "data.eval_ratio=0", "data.system_prompt=null"]
    kill_when(args, lambda: (tmp_path / "run.partial" / "checkpoint-1" / "trainer_state.json").is_file())
    assert not out.exists()

    again = run_cli(*args)
    assert again.code == 0, again.err
    assert "resuming from" in again.err and "checkpoint-" in again.err
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["global_step"] == 3, summary
    assert leftovers(tmp_path) == []


def test_kill_during_pairs_keeps_the_journal_and_the_next_run_finishes(tiny_model_dir, sample_data, tmp_path):
    out = tmp_path / "pairs.jsonl"
    args = ["pairs", "reference-vs-self", "--model", tiny_model_dir, "--data", sample_data / "hh_rlhf_sample.jsonl",
            "--limit", "3", "--max-new-tokens", "8", "--output", out]
    kill_when(args, lambda: (tmp_path / "pairs.jsonl.partial").is_file())
    assert not out.exists()

    again = run_cli(*args)
    assert "Traceback" not in again.err
    if again.code == 0:
        assert json.loads(again.out.strip().splitlines()[-1])["prompts"] == 3
    else:  # a random tiny model may sample nothing usable: then nothing is written, and it says so
        assert again.code == 2 and "nothing written" in again.err, again.err
    assert leftovers(tmp_path) == []  # the journal goes once the output is written


@pytest.mark.slow
def test_kill_during_a_pipeline_merge_then_run_the_pipeline_again(tiny_model_dir, tmp_path):
    import yaml

    data = chat_data(tmp_path / "chat.jsonl", 4)
    out = tmp_path / "pipe"
    spec = {
        "output_dir": str(out), "model": str(tiny_model_dir), "merge_dtype": "fp32", "merge_check": False,
        "overrides": {"quant.bits": None, "train.max_steps": 1, "train.warmup_ratio": 0, "train.per_device_batch_size": 2,
                      "train.global_batch_size": None, "train.gradient_accumulation_steps": 1,
                      "train.gradient_checkpointing": False, "train.progress_bar": False, "train.auto_fit": False,
                      "lora.r": 4, "lora.alpha": 8, "data.max_length": 64, "data.eval_ratio": 0,
                      "data.system_prompt": None, "data.path": str(data)},
        "stages": [{"name": "sft", "recipe": str(RECIPE)}],
    }
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(spec))
    stage = out / "00_sft"
    kill_when(["pipeline", pipeline], any_match(stage, ".merged.merging-*"))
    assert (stage / "adapter" / "resolved_config.yaml").is_file() and not (stage / "merged").exists()

    again = run_cli("pipeline", pipeline)
    assert again.code == 0, again.err
    assert "Traceback" not in again.err
    assert (stage / "merged" / "merge_report.json").is_file()
    assert leftovers(tmp_path) == []

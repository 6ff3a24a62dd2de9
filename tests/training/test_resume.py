"""Resuming: a run killed with SIGKILL mid-training, started again with the same command,
resumes from its last complete checkpoint (left intact), logs every step once and keeps the
first attempt's config; a checkpoint made by another recipe is refused with the keys named."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tifa_lite import train
from tifa_lite.config import dump_config, load_recipe
from tifa_lite.config.loader import RECIPES_DIR
from tifa_lite.errors import ConfigError
from tifa_lite.training.outputs import drop_metrics_after, read_metrics
from tifa_lite.training.resume import differing_keys
from tifa_lite.training.runner import latest_checkpoint, partial_dir

ROLEPLAY = RECIPES_DIR / "sft_qlora_roleplay.yaml"


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_sigkill_then_same_command_resumes(tiny_model_dir, tmp_path, sample_data):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "tifa_lite", "train", str(RECIPES_DIR / "sft_qlora_roleplay.yaml"),
        f"model.name_or_path={tiny_model_dir}", f"train.output_dir={out}", "train.max_steps=8",
        "train.save_steps=2", "train.save_total_limit=null", "train.per_device_batch_size=2",
        "train.gradient_accumulation_steps=1", "train.global_batch_size=null", "train.gradient_checkpointing=false", "train.logging_steps=1",
        f"data.path={sample_data / 'roleplay_sheldon_sample.jsonl'}", "data.limit=40", "data.max_length=512",
        "quant.bits=null", "lora.r=4", "train.progress_bar=false", "train.keep_checkpoints=true",
    ]
    work = partial_dir(out)
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, stdout=log, stderr=log)
    deadline = time.time() + 900
    # Kill between checkpoints, once a step after the latest one (at least checkpoint-4) is logged:
    # the steps a resume repeats. Checked with the process stopped, so no save slips in between.
    while True:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline
        latest = latest_checkpoint(work) if work.exists() else None
        if latest and int(latest.name.split("-")[1]) >= 4:
            os.kill(first.pid, signal.SIGSTOP)
            latest = latest_checkpoint(work)
            if max(logged_so_far(work / "metrics.jsonl"), default=0) > int(latest.name.split("-")[1]):
                break
            os.kill(first.pid, signal.SIGCONT)
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert not out.exists(), "a killed run must not look finished"
    resumed_step = int(latest.name.split("-")[1])
    before = digest(work / latest.name)
    first_config = (work / "resolved_config.yaml").read_text()

    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming from {latest}" in second.stderr
    assert f"after step {resumed_step} dropped; they are logged again" in second.stderr
    assert (out / "adapter_model.safetensors").is_file() and not work.exists()
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert digest(out / latest.name) == before  # the checkpoint it resumed from is intact
    assert loss_steps(out / "metrics.jsonl") == list(range(1, 9))  # each step once, none twice
    assert (out / "resolved_config.attempt1.yaml").read_text() == first_config
    assert (out / "resolved_config.yaml").is_file()


def loss_steps(path: Path) -> list[int]:
    return [row["step"] for row in read_metrics(path) if "loss" in row]


def logged_so_far(path: Path) -> list[int]:
    """Steps of the complete lines a running (or stopped) trainer has written."""
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line stopped half-way
            continue
        if "loss" in row:
            steps.append(row["step"])
    return steps


def test_drop_metrics_after(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}, {"step": 2, "eval_loss": 2.7}, {"step": 3, "loss": 2.4}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert drop_metrics_after(path, 2) == 1
    assert read_metrics(path) == rows[:3]  # the eval at the checkpoint's step ran before the save
    assert drop_metrics_after(path, 2) == 0 and drop_metrics_after(tmp_path / "none.jsonl", 2) == 0


def tiny(model_dir, out, sample_data, *extra):
    return load_recipe(ROLEPLAY, [
        f"model.name_or_path={model_dir}", f"train.output_dir={out}", "train.max_steps=4",
        f"data.path={sample_data / 'roleplay_sheldon_sample.jsonl'}", "data.limit=16", *extra,
    ])


def fake_checkpoint(work: Path, config, step: int = 2) -> Path:
    """A staging folder as a killed run leaves it: its resolved config and one checkpoint."""
    ckpt = work / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (work / "resolved_config.yaml").write_text(dump_config(config))
    return ckpt


@pytest.mark.parametrize("change, named", [
    (["lora.r=8"], ["lora.r: 64 in the checkpoint's recipe, 8 now"]),
    (["model.name_or_path=smollm2-135m-instruct"], ["model.name_or_path: "]),
    (["train.method=cpt"], ["train.method: 'sft' in the checkpoint's recipe, 'cpt' now"]),
    (["train.global_batch_size=32", "train.learning_rate=1e-4"],
     ["train.global_batch_size: 16 in the checkpoint's recipe, 32 now",
      "train.learning_rate: 0.0002 in the checkpoint's recipe, 0.0001 now"]),
])
def test_resuming_under_another_recipe_names_the_keys(tiny_model_dir, tmp_path, sample_data, change, named):
    out = tmp_path / "run"
    work = partial_dir(out)
    first = tiny(tiny_model_dir, out, sample_data)
    fake_checkpoint(work, first)
    recorded = (work / "resolved_config.yaml").read_text()
    with pytest.raises(ConfigError) as info:
        train(tiny(tiny_model_dir, out, sample_data, *change))
    message = str(info.value)
    assert "was made by a different recipe" in message and "train.resume=never" in message
    for line in named:
        assert line in message
    # Refused before anything was loaded or written.
    assert (work / "resolved_config.yaml").read_text() == recorded
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint-2", "resolved_config.yaml"]


def test_keys_a_resume_may_change():
    base = yaml.safe_load(dump_config(load_recipe(ROLEPLAY)))
    same_run = yaml.safe_load(dump_config(load_recipe(ROLEPLAY, [
        "train.logging_steps=1", "train.save_steps=7", "train.progress_bar=false", "train.output_dir=/elsewhere",
        "train.per_device_batch_size=1", "train.gradient_accumulation_steps=8",  # the same global batch over 2 ranks
        "distributed.nnodes=1", "distributed.nproc_per_node=2", "hardware.gpu=t4",
    ])))
    assert differing_keys(base, same_run) == []
    # Under DeepSpeed the world size is part of the checkpoint (one optimizer shard per rank).
    zero3 = yaml.safe_load(dump_config(load_recipe(ROLEPLAY, profile="h100x16_zero3")))
    other_world = yaml.safe_load(dump_config(load_recipe(ROLEPLAY, ["distributed.world_size=8",
                                                                     "distributed.nnodes=1"], profile="h100x16_zero3")))
    assert [key for key, _, _ in differing_keys(zero3, other_world)] == ["distributed.nnodes", "distributed.world_size"]
    # A key only one side knows (another tifa_lite version) is not a difference.
    older = {k: v for k, v in base.items()}
    older["train"] = {k: v for k, v in base["train"].items() if k != "keep_checkpoints"}
    older["train"]["retired_key"] = 1
    assert differing_keys(older, base) == []

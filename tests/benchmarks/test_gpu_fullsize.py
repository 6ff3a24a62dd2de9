"""The CPU dry run of scripts/gpu_fullsize.sh (TIFA_LITE_GPU_CHECK_ON_CPU=1): the full-size GPU
script's own code on tiny models of the same architectures, so an import error or an API misuse
never costs GPU time. One run of each kind of arm, both cards rehearsed; figures are not checked
(they are CPU ones), what every row must carry is."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNS = ["sft-ours-t4", "sft-trl-t4", "dpo-ours-a10", "grpo7b-ours-t4", "grpo7b-trl-a10", "merge-ours-t4",
        "sft-trl-a10-liger"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, embedded_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the dry run is the CPU stand-in for scripts/gpu_fullsize.sh")
    out, work = tmp_path_factory.mktemp("fullsize_out"), tmp_path_factory.mktemp("fullsize_work")
    env = {**os.environ, "TIFA_LITE_GPU_CHECK_ON_CPU": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_fullsize.sh"), "--runs", ",".join(RUNS),
                           "--out", str(out), "--work", str(work), "--tokenizer", str(embedded_model_dir)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (out / "gpu_fullsize.jsonl").read_text(encoding="utf-8").splitlines()
    env_row, rows = json.loads(lines[0])["environment"], [json.loads(line) for line in lines[1:]]
    return {"env": env_row, "rows": {r["id"]: r for r in rows}, "md": (out / "gpu_fullsize.md").read_text(),
            "stdout": proc.stdout}


def test_every_run_reports(dry_run):
    rows = dry_run["rows"]
    assert list(rows) == RUNS
    failed = {i: r.get("error") for i, r in rows.items() if r["status"] not in ("ok", "skipped")}
    assert not failed, failed
    assert rows["sft-trl-a10-liger"]["status"] == "skipped" and "CUDA" in rows["sft-trl-a10-liger"]["error"]
    assert dry_run["env"]["mode"].startswith("CPU DRY RUN")
    assert "CPU DRY RUN" in dry_run["md"] and "| sft-ours-t4 | ok |" in dry_run["md"]
    assert "| sft-ours-t4 | ok |" in dry_run["stdout"]  # the summary is printed too


def test_training_rows_carry_plan_speed_and_losses(dry_run):
    for run_id, row in dry_run["rows"].items():
        if row["status"] != "ok" or run_id.startswith("merge"):
            continue
        assert row["planned_allocator_gib"] > 0 and isinstance(row["planner_fits"], bool), run_id
        assert row["steps"] >= 1 and row["median_step_s"] > 0, run_id
        assert row["loss_finite"] and row["loss_in_range"], (run_id, row["first_losses"])
        assert all(math.isfinite(x) for x in row["first_losses"])
        if run_id.startswith(("sft", "dpo")):
            assert row["tokens_per_s"] > 0, run_id
        else:
            assert row["generation_s"] > 0 and row["train_and_rest_s"] > 0, (run_id, row.get("note"))
    # the cards: T4 rehearsed in fp16, A10 in bf16; the plain TRL side runs fp32 on a CPU
    assert dry_run["rows"]["sft-ours-t4"]["run_plan"]["precision"] == "fp16"
    assert dry_run["rows"]["dpo-ours-a10"]["run_plan"]["precision"] == "bf16"
    assert abs(dry_run["rows"]["dpo-ours-a10"]["first_losses"][0] - math.log(2)) < 0.01


def test_merge_of_the_t4_adapter_passes_its_self_check(dry_run):
    merge = dry_run["rows"]["merge-ours-t4"]
    assert merge["status"] == "ok" and merge["self_check_passed"] and not merge["no_op"], merge


@pytest.fixture
def capped_h100(fake_cuda, monkeypatch):
    """An 80 GiB card whose process context holds 0.5 GiB; records the fraction the run sets."""
    import torch

    fake_cuda(capability=(9, 0), name="NVIDIA H100 80GB HBM3", memory_gib=80, free_gib=79.5)
    calls = {}
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device=None: calls.update(fraction=f))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 14 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 14.2 * 2**30)
    sys.path.insert(0, str(REPO / "benchmarks"))
    return calls


def test_the_cap_is_the_cards_memory_less_the_context(capped_h100):
    from _fullsize_measure import cap_memory

    row = cap_memory("t4")
    assert row["context_gib"] == 0.5 and row["allocator_cap_gib"] == pytest.approx(14.74 - 0.5)
    assert capped_h100["fraction"] == pytest.approx((14.74 - 0.5) / 80)


def test_an_out_of_memory_run_is_a_row_not_a_crash(capped_h100, monkeypatch, tmp_path):
    import torch

    import _fullsize_arms

    def oom(spec, work):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setitem(_fullsize_arms.ARMS, ("ours", "sft"), oom)
    row = _fullsize_arms.run({"id": "sft-ours-t4", "side": "ours", "kind": "sft", "card": "t4"}, tmp_path)
    assert row["status"] == "oom" and "Tried to allocate" in row["error"]
    assert row["max_allocated_gib"] == 14.0 and row["allocator_cap_gib"] == pytest.approx(14.24)


def test_the_table_sets_each_run_beside_plain_trl_and_flags_the_planner():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _fullsize_report import table

    rows = [
        {"id": "sft-ours-a10", "status": "ok", "planner_fits": True, "planned_allocator_gib": 12.0,
         "max_allocated_gib": 10.0, "max_reserved_gib": 11.0, "tokens_per_s": 3000.0, "first_losses": [11.9]},
        {"id": "sft-trl-a10", "status": "ok", "planner_fits": True, "planned_allocator_gib": 12.0,
         "max_allocated_gib": 11.5, "max_reserved_gib": 12.0, "tokens_per_s": 2000.0, "first_losses": [11.9]},
        {"id": "sft-ours-a10-liger", "status": "ok", "planned_allocator_gib": 12.0, "planner_fits": True,
         "max_allocated_gib": 9.0, "max_reserved_gib": 9.5, "tokens_per_s": 3300.0},
        {"id": "grpo7b-ours-t4", "status": "ok", "planned_allocator_gib": 6.0, "planner_fits": True,
         "max_allocated_gib": 6.2, "max_reserved_gib": 7.0, "median_step_s": 10.0, "generation_s": 6.0,
         "train_and_rest_s": 4.0},
        {"id": "grpo7b-trl-t4", "status": "oom", "error": "CUDA out of memory"},
        {"id": "dpo-ours-t4", "status": "not run", "error": "time budget: 10 s left"},
    ]
    lines = {line.split(" | ")[0].strip("| "): line for line in table(rows).splitlines()[2:]}
    assert "+20.0% (over ±15%)" in lines["sft-ours-a10"] and "1.50x (sft-trl-a10)" in lines["sft-ours-a10"]
    # no plain TRL Liger row: against plain TRL; and the lever's own gain against ours without it
    assert "1.65x (sft-trl-a10); lever 1.10x vs sft-ours-a10" in lines["sft-ours-a10-liger"]
    assert "10.00 s/step (gen 6.00 + rest 4.00)" in lines["grpo7b-ours-t4"] and "x (" not in lines["grpo7b-ours-t4"]
    assert "| oom |" in lines["grpo7b-trl-t4"] and "time budget" in lines["dpo-ours-t4"]

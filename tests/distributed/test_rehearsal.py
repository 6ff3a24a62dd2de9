"""The scale profile rehearsed for real on the CPU: two torchrun "nodes" on 127.0.0.1
(one process each, gloo), started by `tifa-lite launch` exactly as on 2×8 H100, train the
single-GPU recipe file full-parameter under DeepSpeed ZeRO-3 (and ZeRO-2, and DPO); the
consolidated checkpoint loads with plain transformers and reproduces the logged loss."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

REPO_ROOT = Path(__file__).resolve().parents[2]
SFT_RECIPE = "recipes/sft_qlora_roleplay.yaml"
DPO_RECIPE = "recipes/dpo_qlora_hh.yaml"
TIMEOUT_S = 540


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_nodes(tmp_path: Path, recipe: str, overrides: list[str], profiles: list[str],
                     launcher: str = "torchrun") -> str:
    """Run `tifa-lite launch --node-rank 0|1` side by side; return node 0's output."""
    port = free_port()
    profile_args = [arg for name in profiles for arg in ("--profile", name)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs, logs = [], []
    for rank in (0, 1):
        log = tmp_path / f"node{rank}.log"
        logs.append(log)
        cmd = [sys.executable, "-m", "tifa_lite", "launch", recipe, *overrides, *profile_args,
               "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
               "--launcher", launcher]
        with log.open("w") as fh:
            # Own session, so a hung rehearsal can be ended as a group without touching anything else.
            procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    outputs = [log.read_text(errors="replace") for log in logs]
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"node {rank} exited {proc.returncode}:\n{out[-6000:]}"
    return outputs[0]


def load_resolved(out: Path):
    from tifa_lite.config import load_recipe

    tree = yaml.safe_load((out / "resolved_config.yaml").read_text())
    tree.pop("profile", None)  # already applied; re-applying would undo the overrides
    return load_recipe(tree)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def assert_full_consolidated_checkpoint(out: Path, initial_dir: Path):
    """Plain transformers loads every tensor at full shape (ZeRO-3 shards would be empty)
    and training moved the weights."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("adapter_model.*")), "full-parameter run must not save a LoRA adapter"
    saved, initial = load_file(out / "model.safetensors"), load_file(initial_dir / "model.safetensors")
    assert set(initial) <= set(saved)
    # ZeRO-2 saves the full module state dict, so a tied lm_head appears as its own key; it
    # must still be the embedding (ZeRO-3's gathered dict drops the duplicate).
    for extra in set(saved) - set(initial):
        assert extra == "lm_head.weight" and torch.equal(saved[extra], saved["model.embed_tokens.weight"])
    for name, tensor in initial.items():
        assert saved[name].shape == tensor.shape, name
    assert any(not torch.equal(saved[name], initial[name]) for name in initial), "weights did not change"
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.eval()
    return model


@pytest.fixture
def eval_row(tmp_path) -> Path:
    """One fixed conversation evaluated by the run after its last step."""
    path = tmp_path / "fixed_eval.jsonl"
    row = {"messages": [
        {"role": "user", "content": "Sheldon, why do you always sit in the same spot?"},
        {"role": "assistant", "content": "In the winter that seat is close enough to the radiator to remain "
                                         "warm, and yet not so close as to cause perspiration."},
    ]}
    path.write_text(json.dumps(row) + "\n")
    return path


# ZeRO-2 goes through `accelerate launch` so both per-node launcher forms run for real.
@pytest.mark.parametrize(
    "stage_profiles, stage, launcher", [([], 3, "torchrun"), (["zero2"], 2, "accelerate")], ids=["zero3", "zero2"]
)
def test_sft_full_parameter_rehearsal(tmp_path, tiny_model_dir, eval_row, stage_profiles, stage, launcher):
    import torch
    from transformers import AutoTokenizer

    from tifa_lite.data.build import build_sft_data
    from tifa_lite.data.tokenize import PaddingCollator

    out = tmp_path / "out"
    steps = 2
    log = launch_two_nodes(
        tmp_path, SFT_RECIPE,
        [f"model.name_or_path={tiny_model_dir}", f"train.output_dir={out}", f"data.eval_path={eval_row}",
         f"train.max_steps={steps}", f"train.eval_steps={steps}"],
        ["h100x16_zero3", *stage_profiles, "cpu_rehearsal"],
        launcher,
    )
    # The recipe's global batch (16) on two ranks: stated by the launcher and by rank 0.
    assert "# batch: global batch 16 = micro-batch 4 × gradient accumulation 2 × world size 2" in log
    assert "batch: global batch 16 = micro-batch 4 × gradient accumulation 2 × world size 2" in log.split("# node 0:")[1]
    assert out.is_dir() and not (tmp_path / "out.partial").exists()

    config = load_resolved(out)
    assert config.distributed.zero_stage == stage and config.quant.bits is None and not config.lora.enabled
    assert (config.train.per_device_batch_size, config.train.gradient_accumulation_steps) == (4, 2)
    rows = metrics(out)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, steps + 1))
    logged = [r["eval_loss"] for r in rows if r.get("eval_loss") is not None]
    assert len(logged) == 1 and rows[-1]["step"] == steps

    model = assert_full_consolidated_checkpoint(out, tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(out)
    fixed = build_sft_data(config, tokenizer).eval
    assert len(fixed) == 1
    batch = PaddingCollator(pad_token_id=tokenizer.pad_token_id)(fixed)
    with torch.no_grad():
        loss = model(**batch).loss.item()
    assert loss == pytest.approx(logged[0], rel=1e-4), (loss, logged[0])


def test_dpo_full_parameter_rehearsal_zero3(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    log = launch_two_nodes(
        tmp_path, DPO_RECIPE,
        [f"model.name_or_path={tiny_model_dir}", f"train.output_dir={out}", "data.overlength=drop",
         "train.max_steps=2", "train.warmup_ratio=0"],  # with a warmup step 1's learning rate is 0
        ["h100x16_zero3", "cpu_rehearsal"],
    )
    assert "# dpo · ZeRO-3 · 2 node(s) × 1 process(es) = world size 2" in log
    config = load_resolved(out)
    assert config.train.method == "dpo" and config.distributed.zero_stage == 3 and not config.lora.enabled
    rows = [r for r in metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    # Full-parameter DPO keeps a separate frozen reference model (TRL loads it beside the
    # sharded policy); after one update the policy's implied rewards leave exactly zero.
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert rows[1]["rewards/chosen"] != 0.0 or rows[1]["rewards/rejected"] != 0.0
    assert_full_consolidated_checkpoint(out, tiny_model_dir)


def test_grpo_rehearsal_zero3_generates_with_gathered_weights(tmp_path, tiny_model_dir, sample_data):
    """What differs for GRPO under ZeRO-3: completions are sampled by the sharded policy,
    so TRL gathers the full weights onto every rank for generation
    (ds3_gather_for_generation), and one optimizer step's generation batch (micro × world ×
    accumulation = the global batch) must hold whole groups of num_generations."""
    import torch

    out = tmp_path / "out"
    launch_two_nodes(
        tmp_path, "recipes/grpo_qlora_a10.yaml",
        [f"model.name_or_path={tiny_model_dir}", f"train.output_dir={out}",
         f"data.path={sample_data / 'gsm8k_sample.jsonl'}", "data.limit=8", "train.global_batch_size=4",
         "grpo.num_generations=2", "grpo.max_completion_length=8", "train.max_steps=2"],
        ["h100x16_zero3", "cpu_rehearsal"],
    )
    config = load_resolved(out)
    assert config.train.method == "grpo" and config.distributed.zero_stage == 3
    assert (config.train.per_device_batch_size, config.train.gradient_accumulation_steps) == (2, 1)
    rows = [r for r in metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["completions/mean_length"] > 0 for r in rows)
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.ds3_gather_for_generation is True
    assert args.generation_batch_size == 4 and args.generation_batch_size % args.num_generations == 0
    assert Path(args.deepspeed).name == "zero3.json"
    assert_full_consolidated_checkpoint(out, tiny_model_dir)

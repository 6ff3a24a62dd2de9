"""The scale profiles rehearsed for real on the CPU: two torchrun "nodes" on 127.0.0.1
(one process each, gloo), started by `tifa-lite launch` exactly as on 2×8 H100, train the
single-GPU recipe files full-parameter under DeepSpeed ZeRO-3 (SFT, DPO, GRPO) and ZeRO-2;
the parameters are partitioned as they load, the consolidated checkpoint loads with plain
transformers and reproduces the logged loss, and the reference model comes from the
policy's pinned revision. One node × 2 ranks trains the QLoRA recipe with plain DDP."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
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
                     launcher: str = "torchrun", env: dict[str, str] | None = None, nodes: int = 2,
                     launch_args: list[str] | None = None) -> str:
    """Run `tifa-lite launch --node-rank 0|1` side by side (or one node's launch when
    ``nodes=1``); return node 0's output. Each node's output is also in ``node{R}.log``."""
    port = free_port()
    profile_args = [arg for name in profiles for arg in ("--profile", name)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    procs, logs = [], []
    for rank in range(nodes):
        log = tmp_path / f"node{rank}.log"
        logs.append(log)
        cmd = [sys.executable, "-m", "tifa_lite", "launch", recipe, *overrides, *profile_args,
               "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
               "--launcher", launcher, *(launch_args or [])]
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


def rank_lines(tmp_path: Path, when: str) -> dict[int, str]:
    """Each rank's log line "rank R after loading: …" (runtime.load_report) or "after training: …"
    (runtime.weights_fingerprint)."""
    lines = {}
    for log in sorted(tmp_path.glob("node*.log")):
        for match in re.finditer(rf"rank (\d+) after {when}: (.*)", log.read_text(errors="replace")):
            lines[int(match.group(1))] = match.group(2)
    return lines


def load_reports(tmp_path: Path) -> dict[int, str]:
    return rank_lines(tmp_path, "loading")


def assert_ranks_in_sync(tmp_path: Path, world: int = 2) -> None:
    """Data-parallel ranks end with identical weights: DDP / ZeRO-2 averaged their gradients."""
    prints = rank_lines(tmp_path, "training")
    assert sorted(prints) == list(range(world)), prints
    assert len(set(prints.values())) == 1 and prints[0].startswith("trainable weights fingerprint"), prints


def assert_partitioned_at_load(tmp_path: Path, world: int = 2) -> None:
    """Right after from_pretrained every rank holds ZeRO-3 placeholders and about 1/world of
    the elements (each tensor's shard is padded to a multiple of the world size)."""
    reports = load_reports(tmp_path)
    assert sorted(reports) == list(range(world)), reports
    for rank, line in reports.items():
        match = re.match(r"ZeRO-3 partitioned (\d+) of (\d+) parameter tensors at load; this rank holds "
                         r"([\d,]+) of ([\d,]+) elements", line)
        assert match, f"rank {rank} loaded the model whole: {line}"
        tensors, of_tensors = int(match.group(1)), int(match.group(2))
        held, total = (int(match.group(i).replace(",", "")) for i in (3, 4))
        assert tensors == of_tensors and total / world <= held <= total / world + tensors, line


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


PINNED = hashlib.sha1(b"pinned").hexdigest()
HUB_MODEL = "tifa-test/tiny-llama"


@pytest.fixture
def hub_cache(tmp_path, tiny_model_dir) -> dict[str, str]:
    """An offline hub cache holding HUB_MODEL at two commits: PINNED is the tiny model, and
    `main` (what a load without the revision gets) is a decoy with other weights. Returns the
    environment the ranks need and the overrides that pin the recipe to PINNED."""
    from safetensors.torch import load_file, save_file

    repo = tmp_path / "hub" / ("models--" + HUB_MODEL.replace("/", "--"))
    decoy = hashlib.sha1(b"decoy").hexdigest()
    for commit in (PINNED, decoy):
        shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(decoy)
    weights = repo / "snapshots" / decoy / "model.safetensors"
    scaled = {k: (v * 8 if v.dim() == 2 else v).contiguous() for k, v in load_file(weights).items()}
    save_file(scaled, weights, metadata={"format": "pt"})
    return {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}


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
    if stage == 3:
        assert_partitioned_at_load(tmp_path)
    else:  # ZeRO-2 replicates the parameters: every rank loads them all
        reports = load_reports(tmp_path)
        assert sorted(reports) == [0, 1] and all(r.startswith("the whole model (3,219,776 elements)")
                                                 for r in reports.values()), reports
        assert_ranks_in_sync(tmp_path)

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


def test_dpo_full_parameter_rehearsal_zero3(tmp_path, tiny_model_dir, hub_cache):
    """The base is a hub model pinned to a revision other than main. TRL builds the separate
    frozen reference model itself; it must get the same revision (tifa_lite.methods.reference),
    which shows at step 1, before any update: policy and reference give every answer the same
    log-probability, so both implied rewards are exactly zero (with main's decoy weights they
    are not)."""
    out = tmp_path / "out"
    log = launch_two_nodes(
        tmp_path, DPO_RECIPE,
        [f"model.name_or_path={HUB_MODEL}", f"model.revision={PINNED}", f"train.output_dir={out}",
         "data.overlength=drop", "train.max_steps=2", "train.warmup_ratio=0"],  # with a warmup step 1's lr is 0
        ["h100x16_zero3", "cpu_rehearsal"],
        env=hub_cache,
    )
    assert "# dpo · ZeRO-3 · 2 node(s) × 1 process(es) = world size 2" in log
    assert_partitioned_at_load(tmp_path)
    config = load_resolved(out)
    assert config.train.method == "dpo" and config.distributed.zero_stage == 3 and not config.lora.enabled
    rows = [r for r in metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    # After one update the policy's implied rewards leave zero.
    assert rows[1]["rewards/chosen"] != 0.0 or rows[1]["rewards/rejected"] != 0.0
    assert_full_consolidated_checkpoint(out, tiny_model_dir)


def test_grpo_rehearsal_zero3_generates_with_gathered_weights(tmp_path, tiny_model_dir, hub_cache):
    """What differs for GRPO under ZeRO-3: completions are sampled by the sharded policy,
    so TRL gathers the full weights onto every rank for generation
    (ds3_gather_for_generation), and one optimizer step's generation batch (micro × world ×
    accumulation = the global batch) must hold whole groups of num_generations. The
    reference (beta > 0) is TRL's second model from the policy's pinned revision: the KL to
    it is zero at step 1. With distributed.save_16bit_model=false the final folder holds
    DeepSpeed's shards only, and they hold the whole trained model."""
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    out = tmp_path / "out"
    launch_two_nodes(
        tmp_path, "recipes/grpo_qlora_a10.yaml",
        [f"model.name_or_path={HUB_MODEL}", f"model.revision={PINNED}", f"train.output_dir={out}",
         f"data.path={REPO_ROOT / 'data' / 'arithmetic' / 'train.jsonl'}", "data.limit=8",
         "train.global_batch_size=4", "grpo.num_generations=2", "grpo.max_completion_length=8",
         "train.max_steps=2", "distributed.save_16bit_model=false"],
        ["h100x16_zero3", "cpu_rehearsal"],
        env=hub_cache,
    )
    assert_partitioned_at_load(tmp_path)
    config = load_resolved(out)
    assert config.train.method == "grpo" and config.distributed.zero_stage == 3 and config.grpo.beta > 0
    assert (config.train.per_device_batch_size, config.train.gradient_accumulation_steps) == (2, 1)
    rows = [r for r in metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["completions/mean_length"] > 0 for r in rows)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.ds3_gather_for_generation is True
    assert args.generation_batch_size == 4 and args.generation_batch_size % args.num_generations == 0
    assert args.deepspeed["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is False

    assert not (out / "model.safetensors").exists() and (out / "zero_to_fp32.py").is_file()
    recovered = get_fp32_state_dict_from_zero_checkpoint(str(out))
    initial = load_file(tiny_model_dir / "model.safetensors")
    for name, tensor in initial.items():
        assert recovered[name].shape == tensor.shape, name
    assert any(not torch.equal(recovered[name], initial[name]) for name in initial), "weights did not change"


def test_qlora_ddp_rehearsal_one_node_two_ranks(tmp_path, tiny_model_dir):
    """The single-GPU QLoRA recipe on one node × N ranks with plain DDP (`--profile qlora_ddp`),
    N = 2 on the CPU. A stale staging folder of an earlier attempt (train.resume=never) is
    removed by rank 0 alone before any rank writes into it."""
    out = tmp_path / "out"
    stale = tmp_path / "out.partial"
    (stale / "checkpoint-7").mkdir(parents=True)
    (stale / "checkpoint-7" / "trainer_state.json").write_text("{}")
    (stale / "left_over.bin").write_bytes(b"x")
    log = launch_two_nodes(
        tmp_path, SFT_RECIPE,
        [f"model.name_or_path={tiny_model_dir}", f"train.output_dir={out}", "train.max_steps=2",
         "train.resume=never"],
        ["qlora_ddp", "cpu_rehearsal"],
        nodes=1, launch_args=["--nnodes", "1", "--nproc-per-node", "2"],
    )
    assert "# sft · no ZeRO · 1 node(s) × 2 process(es) = world size 2" in log
    assert "# batch: global batch 16 = micro-batch 2 × gradient accumulation 4 × world size 2" in log
    reports = load_reports(tmp_path)
    assert sorted(reports) == [0, 1] and all(r.startswith("the whole model") for r in reports.values())
    # One DDP model, not one model per rank: both ranks end with the same adapter.
    assert_ranks_in_sync(tmp_path)
    config = load_resolved(out)
    assert config.is_qlora and config.distributed.deepspeed is None and config.distributed.world_size == 2
    rows = [r for r in metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    assert not (out / "left_over.bin").exists() and not (out / "checkpoint-7").exists()
    assert not stale.exists()

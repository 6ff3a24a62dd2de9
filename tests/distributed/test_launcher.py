"""`tifa-lite launch`: dry-run command lines for 2×8 H100 and the pre-flight errors."""

import shlex
import sys
from pathlib import Path

import pytest

from tifa_lite.cli import main
from tifa_lite.config import load_recipe
from tifa_lite.distributed.launcher import LaunchSpec, build_command, hostfile_text
from tifa_lite.distributed.preflight import check_launch, is_loopback, mount_of
from tifa_lite.errors import ConfigError
from tifa_lite.hardware import Hardware

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE = "recipes/sft_qlora_roleplay.yaml"
H100_NODE = Hardware(device="cuda", gpu_name="NVIDIA H100 80GB HBM3", bf16=True, gpu_count=8, total_memory_gib=79.6)
CPU = Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)
MASTER = "192.0.2.10"  # TEST-NET-1: a documentation address, never contacted (dry runs only)


@pytest.fixture
def on_h100(monkeypatch):
    monkeypatch.setattr("tifa_lite.hardware.detect", lambda: H100_NODE)


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)


def dry_run(capsys, *extra):
    code = main(["launch", RECIPE, *extra, "--dry-run"])
    out = capsys.readouterr()
    return code, out.out, out.err


def node_commands(out: str) -> dict[int, list[str]]:
    lines = out.splitlines()
    commands = {}
    for i, line in enumerate(lines):
        if line.startswith("# node "):
            rank = int(line.split()[2].rstrip(":"))
            commands[rank] = shlex.split(lines[i + 1])
    return commands


def expected_torchrun(rank: int) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc_per_node", "8", "--node_rank", str(rank),
        "--master_addr", MASTER, "--master_port", "29500",
        "-m", "tifa_lite", "train", RECIPE,
        "distributed.nnodes=2", "distributed.nproc_per_node=8", "distributed.master_port=29500",
        "--profile", "h100x16_zero3",
    ]


def test_dry_run_2x8_h100_torchrun(capsys, on_h100):
    code, out, _ = dry_run(capsys, "--profile", "h100x16_zero3", "--nnodes", "2", "--nproc-per-node", "8",
                           "--node-rank", "1", "--master-addr", MASTER)
    assert code == 0
    commands = node_commands(out)
    assert commands == {0: expected_torchrun(0), 1: expected_torchrun(1)}
    assert "# node 1  <- this node:" in out
    assert "ZeRO-3 · 2 node(s) × 8 process(es) = world size 16" in out
    assert "# batch: global batch 16 = micro-batch 1 × gradient accumulation 1 × world size 16" in out
    assert "NCCL_SOCKET_IFNAME=" in out and "TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in out
    # GPU nodes need no CPU-rehearsal environment.
    assert "DS_ACCELERATOR" not in out


def test_dry_run_passes_overrides_and_port_to_every_rank(capsys, on_h100):
    code, out, _ = dry_run(capsys, "train.global_batch_size=128", "--profile", "h100x16_zero3",
                           "--nnodes", "2", "--nproc-per-node", "8", "--master-addr", MASTER, "--master-port", "29611")
    assert code == 0
    cmd = node_commands(out)[0]
    assert cmd[cmd.index("--master_port") + 1] == "29611"
    assert "distributed.master_port=29611" in cmd and "train.global_batch_size=128" in cmd
    assert "micro-batch 4 × gradient accumulation 2 × world size 16" in out


def test_accelerate_form_from_the_cli(capsys, on_h100):
    code, out, _ = dry_run(capsys, "--profile", "h100x16_zero3", "--master-addr", MASTER, "--launcher", "accelerate")
    assert code == 0
    cmd = node_commands(out)[0]
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "16" and cmd[cmd.index("--mixed_precision") + 1] == "bf16"
    assert Path(cmd[cmd.index("--deepspeed_config_file") + 1]) == REPO_ROOT / "recipes" / "deepspeed" / "zero3.json"


def test_accelerate_form():
    spec = LaunchSpec(recipe=RECIPE, profiles=["h100x16_zero3"], overrides=[], nnodes=2, nproc_per_node=8,
                      node_rank=1, master_addr=MASTER, master_port=29500, launcher="accelerate",
                      deepspeed_config="/x/recipes/deepspeed/zero3.json", mixed_precision="bf16")
    cmd = build_command(spec)
    head = cmd[: cmd.index("-m", 3)]
    assert head == [
        sys.executable, "-m", "accelerate.commands.launch",
        "--num_machines", "2", "--num_processes", "16", "--machine_rank", "1",
        "--main_process_ip", MASTER, "--main_process_port", "29500",
        "--mixed_precision", "bf16", "--dynamo_backend", "no",
        "--use_deepspeed", "--deepspeed_config_file", "/x/recipes/deepspeed/zero3.json",
        "--deepspeed_multinode_launcher", "standard",
    ]
    assert cmd[len(head):len(head) + 4] == ["-m", "tifa_lite", "train", RECIPE]


def test_deepspeed_hostfile_form(capsys, on_h100, tmp_path):
    hostfile = tmp_path / "hostfile"
    code, out, _ = dry_run(capsys, "--profile", "h100x16_zero3", "--nnodes", "2", "--nproc-per-node", "8",
                           "--master-addr", MASTER, "--launcher", "deepspeed", "--hosts", "gpu-a,gpu-b",
                           "--hostfile", str(hostfile))
    assert code == 0
    assert "#   gpu-a slots=8" in out and "#   gpu-b slots=8" in out
    cmd = shlex.split([line for line in out.splitlines() if line.startswith("deepspeed ")][0])
    assert cmd[:14] == [
        "deepspeed", "--hostfile", str(hostfile), "--num_nodes", "2", "--num_gpus", "8",
        "--master_addr", MASTER, "--master_port", "29500", "--no_local_rank", "--module", "tifa_lite",
    ]
    assert cmd[14:16] == ["train", RECIPE]
    assert not hostfile.exists()  # a dry run writes nothing
    spec = LaunchSpec(recipe=RECIPE, profiles=[], overrides=[], nnodes=2, nproc_per_node=8, node_rank=0,
                      master_addr=MASTER, master_port=29500, hosts=["gpu-a", "gpu-b"])
    assert hostfile_text(spec) == "gpu-a slots=8\ngpu-b slots=8\n"


def test_deepspeed_launcher_needs_one_host_per_node(capsys, on_h100):
    code, _, err = dry_run(capsys, "--profile", "h100x16_zero3", "--master-addr", MASTER,
                           "--launcher", "deepspeed", "--hosts", "gpu-a")
    assert code == 2
    assert "needs one host per node: got 1 host(s) for nnodes=2" in err


def test_world_size_must_be_nodes_times_gpus(capsys, on_h100):
    code, _, err = dry_run(capsys, "--profile", "h100x16_zero3", "--nnodes", "1", "--nproc-per-node", "8",
                           "--master-addr", MASTER)
    assert code == 2
    assert "distributed.world_size=16 but nnodes × nproc_per_node = 1 × 8 = 8" in err
    assert "set distributed.world_size=8" in err
    # Saying so explicitly is accepted, with the same global batch.
    code, out, _ = dry_run(capsys, "distributed.world_size=8", "--profile", "h100x16_zero3", "--nnodes", "1",
                           "--nproc-per-node", "8")
    assert code == 0 and "world size 8" in out


def test_more_processes_than_gpus_is_an_error(capsys, monkeypatch):
    monkeypatch.setattr("tifa_lite.hardware.detect", lambda: Hardware("cuda", "NVIDIA H100", True, 4, 79.6))
    code, _, err = dry_run(capsys, "--profile", "h100x16_zero3", "--master-addr", MASTER)
    assert code == 2
    assert "--nproc-per-node 8 but this node has 4 GPU(s)" in err


@pytest.mark.parametrize("addr", ["127.0.0.1", "localhost", "127.0.1.1", "::1"])
def test_loopback_master_with_several_gpu_nodes_is_an_error(capsys, on_h100, addr):
    code, _, err = dry_run(capsys, "--profile", "h100x16_zero3", "--master-addr", addr)
    assert code == 2
    assert f"--master-addr {addr} is a loopback address, but nnodes=2" in err


def test_loopback_master_is_fine_for_a_cpu_rehearsal(capsys, monkeypatch):
    monkeypatch.setattr("tifa_lite.hardware.detect", lambda: CPU)
    code, out, _ = dry_run(capsys, "--profile", "h100x16_zero3", "--profile", "cpu_rehearsal",
                           "--master-addr", "127.0.0.1")
    assert code == 0
    assert "CPU rehearsal: 2 'nodes' on the loopback address 127.0.0.1" in out
    cmd = node_commands(out)[1]
    assert cmd[0] == "DS_ACCELERATOR=cpu" and cmd[1].startswith("OMP_NUM_THREADS=")
    assert "--nproc_per_node" in cmd and cmd[cmd.index("--nproc_per_node") + 1] == "1"
    assert "shared between nodes" not in out  # every "node" is this machine


def test_several_nodes_need_a_master_addr(capsys, on_h100):
    code, _, err = dry_run(capsys, "--profile", "h100x16_zero3")
    assert code == 2 and "pass --master-addr" in err


def test_node_rank_out_of_range(capsys, on_h100):
    code, _, err = dry_run(capsys, "--profile", "h100x16_zero3", "--master-addr", MASTER, "--node-rank", "2")
    assert code == 2 and "--node-rank 2: must be between 0 and nnodes-1 = 1" in err


def test_global_batch_must_divide_by_world_size(capsys, on_h100):
    code, _, err = dry_run(capsys, "train.global_batch_size=24", "--profile", "h100x16_zero3",
                           "--master-addr", MASTER)
    assert code == 2 and "global_batch_size=24 is not a multiple of the world size 16" in err


def test_output_dir_on_local_disk_warns_on_nfs_does_not(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        "server:/export /mnt/shared nfs4 rw 0 0\n"
        "lustre@o2ib:/fs /lus lustre rw 0 0\n"
    )
    config = load_recipe(REPO_ROOT / RECIPE, ["train.output_dir=/home/me/out"], profile="h100x16_zero3")
    spec = LaunchSpec(recipe=RECIPE, profiles=["h100x16_zero3"], overrides=[], nnodes=2, nproc_per_node=8,
                      node_rank=0, master_addr=MASTER, master_port=29500)
    result = check_launch(spec, config, H100_NODE, mounts_file=str(mounts))
    assert len(result.warnings) == 1 and "ext4 mounted at /" in result.warnings[0]
    for shared in ("/mnt/shared/run1", "/lus/project/run1"):
        config = load_recipe(REPO_ROOT / RECIPE, [f"train.output_dir={shared}"], profile="h100x16_zero3")
        assert check_launch(spec, config, H100_NODE, mounts_file=str(mounts)).warnings == []
    assert mount_of(Path("/mnt/shared/a/b"), str(mounts)) == ("/mnt/shared", "nfs4")


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback(MASTER) and not is_loopback("10.1.2.3")


@pytest.fixture
def without_deepspeed(monkeypatch):
    """DeepSpeed unimportable, as on a laptop that only prepares the GPU nodes' commands."""
    import importlib.util

    monkeypatch.setitem(sys.modules, "deepspeed", None)
    assert importlib.util.find_spec("deepspeed") is None


def test_dry_run_without_deepspeed_prints_the_commands_and_warns(capsys, on_h100, without_deepspeed):
    code, out, _ = dry_run(capsys, "--profile", "h100x16_zero3", "--nnodes", "2", "--nproc-per-node", "8",
                           "--master-addr", MASTER)
    assert code == 0
    assert node_commands(out) == {0: expected_torchrun(0), 1: expected_torchrun(1)}
    warning = [line for line in out.splitlines() if line.startswith("# WARNING: distributed.deepspeed=")]
    assert len(warning) == 1 and "DeepSpeed is not installed on this node" in warning[0]
    assert "pip install 'tifa-lite[deepspeed]'" in warning[0]


def test_real_launch_without_deepspeed_refuses(capsys, on_h100, without_deepspeed, monkeypatch):
    import subprocess

    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or 0)
    code = main(["launch", RECIPE, "--profile", "h100x16_zero3", "--master-addr", MASTER])
    err = capsys.readouterr().err
    assert code == 2 and "DeepSpeed is not installed on this node" in err
    assert "pip install 'tifa-lite[deepspeed]'" in err and started == []


def expected_ddp_torchrun(nproc: int) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", str(nproc), "--node_rank", "0",
        "--master_addr", "127.0.0.1", "--master_port", "29500",
        "-m", "tifa_lite", "train", RECIPE,
        "distributed.nnodes=1", f"distributed.nproc_per_node={nproc}", "distributed.master_port=29500",
        "--profile", "qlora_ddp",
    ]


def test_dry_run_1xN_qlora_ddp(capsys, on_h100):
    """Same recipe, one switch: QLoRA on N GPUs of one node, the recipe's global batch (16) kept."""
    code, out, _ = dry_run(capsys, "--profile", "qlora_ddp", "--nproc-per-node", "4")
    assert code == 0
    assert node_commands(out) == {0: expected_ddp_torchrun(4)}
    assert "# sft · no ZeRO · 1 node(s) × 4 process(es) = world size 4" in out
    assert "# batch: global batch 16 = micro-batch 2 × gradient accumulation 2 × world size 4" in out
    code, out, _ = dry_run(capsys, "--profile", "qlora_ddp")  # N = the profile's 8
    assert code == 0 and node_commands(out) == {0: expected_ddp_torchrun(8)}
    assert "# batch: global batch 16 = micro-batch 2 × gradient accumulation 1 × world size 8" in out
    code, out, _ = dry_run(capsys, "--profile", "qlora_ddp", "--nproc-per-node", "4", "--launcher", "accelerate")
    cmd = node_commands(out)[0]
    assert code == 0 and "--multi_gpu" in cmd and "--use_deepspeed" not in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[cmd.index("--num_machines") + 1] == "1"


def test_bad_profile_name_suggests(capsys):
    code, _, err = dry_run(capsys, "--profile", "h100x16_zero")
    assert code == 2 and "did you mean 'h100x16_zero3'" in err


def test_check_launch_rejects_mismatched_spec():
    config = load_recipe(REPO_ROOT / RECIPE, profile="h100x16_zero3")
    spec = LaunchSpec(recipe=RECIPE, profiles=[], overrides=[], nnodes=4, nproc_per_node=8, node_rank=0,
                      master_addr=MASTER, master_port=29500)
    with pytest.raises(ConfigError, match="world size 32"):
        check_launch(spec, config, H100_NODE)

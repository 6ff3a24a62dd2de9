"""Per-node launch commands for torchrun, ``accelerate launch`` and the ``deepspeed``
launcher. Every form starts the same entry point a single-GPU run uses
(``python -m tifa_lite train RECIPE --profile …``), so a scale run differs from a local
one only in keys, never in code path.

Why build command lines instead of calling ``torch.distributed.run`` in-process: the
per-node command is what a user copies into a job script (Slurm, k8s, two ssh
sessions), and the dry run must print exactly what would run.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

LAUNCHERS = ("torchrun", "accelerate", "deepspeed")


@dataclass
class LaunchSpec:
    recipe: str
    profiles: list[str]
    overrides: list[str]
    nnodes: int
    nproc_per_node: int
    node_rank: int
    master_addr: str
    master_port: int
    launcher: str = "torchrun"
    deepspeed_config: str | None = None
    # accelerate launch: "bf16" | "fp16" | "no" (the trainer sets the same from the recipe).
    mixed_precision: str = "no"
    # deepspeed launcher: one line per node ("host slots=N").
    hosts: list[str] = field(default_factory=list)
    hostfile: str | None = None
    python: str = field(default_factory=lambda: sys.executable)

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def train_args(spec: LaunchSpec) -> list[str]:
    """Arguments of ``python -m tifa_lite`` on every rank: the recipe, its profiles and the
    sizes this launch really has (the config checks them against WORLD_SIZE)."""
    # Overrides before the options: argparse cannot take positionals after `--profile X`.
    args = ["train", spec.recipe, *rank_overrides(spec)]
    for name in spec.profiles:
        args += ["--profile", name]
    return args


def rank_overrides(spec: LaunchSpec) -> list[str]:
    # The launch's own sizes come last so they win over a stray override of the same key.
    return [
        *spec.overrides,
        f"distributed.nnodes={spec.nnodes}",
        f"distributed.nproc_per_node={spec.nproc_per_node}",
        f"distributed.master_port={spec.master_port}",
    ]


def torchrun_command(spec: LaunchSpec) -> list[str]:
    return [
        spec.python, "-m", "torch.distributed.run",
        "--nnodes", str(spec.nnodes),
        "--nproc_per_node", str(spec.nproc_per_node),
        "--node_rank", str(spec.node_rank),
        "--master_addr", spec.master_addr,
        "--master_port", str(spec.master_port),
        "-m", "tifa_lite",
        *train_args(spec),
    ]


def accelerate_command(spec: LaunchSpec) -> list[str]:
    cmd = [
        spec.python, "-m", "accelerate.commands.launch",
        "--num_machines", str(spec.nnodes),
        # accelerate counts processes over all machines, torchrun per machine.
        "--num_processes", str(spec.world_size),
        "--machine_rank", str(spec.node_rank),
        "--main_process_ip", spec.master_addr,
        "--main_process_port", str(spec.master_port),
        "--mixed_precision", spec.mixed_precision,
        "--dynamo_backend", "no",
    ]
    if spec.deepspeed_config:
        cmd += [
            "--use_deepspeed",
            "--deepspeed_config_file", spec.deepspeed_config,
            # "standard" = torchrun-style rendezvous on every node; no pdsh/ssh between nodes.
            "--deepspeed_multinode_launcher", "standard",
        ]
    else:
        cmd += ["--multi_gpu"]
    return cmd + ["-m", "tifa_lite", *train_args(spec)]


def hostfile_text(spec: LaunchSpec) -> str:
    return "".join(f"{host} slots={spec.nproc_per_node}\n" for host in spec.hosts)


def deepspeed_command(spec: LaunchSpec) -> list[str]:
    """Run once, on the first host: the deepspeed launcher reaches the others over ssh (pdsh)."""
    return [
        "deepspeed",
        "--hostfile", spec.hostfile or "hostfile",
        "--num_nodes", str(spec.nnodes),
        "--num_gpus", str(spec.nproc_per_node),
        "--master_addr", spec.master_addr,
        "--master_port", str(spec.master_port),
        # Our CLI takes no --local_rank; ranks read LOCAL_RANK from the environment.
        "--no_local_rank",
        "--module", "tifa_lite",
        *train_args(spec),
    ]


def build_command(spec: LaunchSpec) -> list[str]:
    builders = {"torchrun": torchrun_command, "accelerate": accelerate_command, "deepspeed": deepspeed_command}
    return builders[spec.launcher](spec)


def nccl_hints(interfaces: list[str]) -> list[str]:
    """Environment worth setting on real multi-node GPU runs, as shell lines with reasons."""
    iface = ",".join(interfaces) if interfaces else "<interface that reaches the master, see `ip -br addr`>"
    return [
        f"export NCCL_SOCKET_IFNAME={iface}  # bootstrap/socket traffic on the inter-node NIC, not docker0/lo",
        "export NCCL_DEBUG=WARN              # INFO on a first run: prints the transport (IB/RoCE vs sockets) chosen",
        "export NCCL_IB_DISABLE=0            # InfiniBand/RoCE on; pin HCAs with NCCL_IB_HCA=mlx5 if several",
        "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1  # a dead rank fails the job instead of hanging it",
        "# collective timeout: TrainingArguments.ddp_timeout=1800 s (set by tifa_lite) — a ZeRO-3 "
        "save of a 7B model keeps ranks waiting on rank 0",
    ]


def shell_line(cmd: list[str], env: dict[str, str] | None = None) -> str:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    line = " ".join(shlex.quote(part) for part in cmd)
    return f"{prefix} {line}" if prefix else line


def describe_per_node(spec: LaunchSpec, env: dict[str, str] | None = None) -> list[str]:
    """Dry-run lines: one command per node (torchrun/accelerate) or hostfile + one command."""
    lines: list[str] = []
    if spec.launcher == "deepspeed":
        lines.append(f"# hostfile ({spec.hostfile or 'hostfile'}):")
        lines += [f"#   {row}" for row in hostfile_text(spec).splitlines()]
        lines.append("# run once, on the first host:")
        lines.append(shell_line(build_command(spec), env))
        return lines
    for rank in range(spec.nnodes):
        node = LaunchSpec(**{**spec.__dict__, "node_rank": rank})
        marker = "  <- this node" if rank == spec.node_rank else ""
        lines.append(f"# node {rank}{marker}:")
        lines.append(shell_line(build_command(node), env))
    return lines


def resolve_path_for_nodes(path: str | None) -> str | None:
    # Absolute, so every node (same shared checkout) finds the DeepSpeed JSON from any cwd.
    return str(Path(path).resolve()) if path else None

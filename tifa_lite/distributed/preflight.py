"""Checks run on each node before anything is launched, so a misconfigured 16-GPU job
fails in one second with a message instead of hanging in rendezvous for ten minutes."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.distributed.launcher import LaunchSpec
from tifa_lite.errors import ConfigError
from tifa_lite.hardware import Hardware

# Filesystems every node of a cluster sees the same way (checked against /proc/mounts).
SHARED_FS_TYPES = {
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "cephfs",
    "glusterfs", "fuse.glusterfs", "wekafs", "fuse.juicefs", "fuse.s3fs", "fuse.gcsfuse",
    "fuse.mountpoint-s3", "fuse.sshfs", "9p", "virtiofs", "panfs", "orangefs", "vast",
}


@dataclass
class Preflight:
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_loopback(addr: str) -> bool:
    if addr.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        pass
    try:
        resolved = socket.gethostbyname(addr)
    except OSError:
        raise ConfigError(
            f"--master-addr {addr}: this node cannot resolve that name. Use the master node's IP address."
        ) from None
    return ipaddress.ip_address(resolved).is_loopback


def mount_of(path: Path, mounts_file: str = "/proc/mounts") -> tuple[str, str] | None:
    """(mount point, filesystem type) that holds or will hold ``path`` (longest mount prefix)."""
    path = path.expanduser()
    path = path.resolve() if path.exists() else Path(os.path.abspath(path))
    try:
        rows = Path(mounts_file).read_text().splitlines()
    except OSError:
        return None
    best: tuple[str, str] | None = None
    for row in rows:
        parts = row.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and (
            best is None or len(point) > len(best[0])
        ):
            best = (point, parts[2])
    return best


def check_launch(
    spec: LaunchSpec, config: RecipeConfig, hardware: Hardware, mounts_file: str = "/proc/mounts",
    dry_run: bool = False,
) -> Preflight:
    """Raise ConfigError for what cannot work; collect warnings for what might not. A dry run
    only prints commands, so what this node lacks to run them (DeepSpeed) is a warning there:
    the commands are often prepared on a laptop for the GPU nodes."""
    result = Preflight()
    if not 0 <= spec.node_rank < spec.nnodes:
        raise ConfigError(f"--node-rank {spec.node_rank}: must be between 0 and nnodes-1 = {spec.nnodes - 1}.")
    if config.distributed.world_size != spec.world_size:
        # Normally caught when the config is resolved; kept for configs built in Python.
        raise ConfigError(
            f"world size {spec.world_size} (= --nnodes {spec.nnodes} × --nproc-per-node {spec.nproc_per_node}) "
            f"but the profile is written for distributed.world_size={config.distributed.world_size}."
        )
    on_gpu = hardware.device == "cuda"
    if on_gpu and spec.nproc_per_node > hardware.gpu_count:
        raise ConfigError(
            f"--nproc-per-node {spec.nproc_per_node} but this node has {hardware.gpu_count} GPU(s): world size must "
            f"be nodes × GPUs. Use --nproc-per-node {hardware.gpu_count} (and distributed.world_size="
            f"{spec.nnodes * hardware.gpu_count})."
        )
    local_nodes = is_loopback(spec.master_addr)  # every "node" on this machine: a rehearsal
    if spec.nnodes > 1 and local_nodes:
        if on_gpu:
            raise ConfigError(
                f"--master-addr {spec.master_addr} is a loopback address, but nnodes={spec.nnodes}: the other nodes "
                "would each rendezvous with themselves and wait forever. Pass the master node's address on the "
                "network the nodes share (e.g. its IP from `hostname -I`)."
            )
        result.notes.append(
            f"CPU rehearsal: {spec.nnodes} 'nodes' on the loopback address {spec.master_addr} (gloo backend)."
        )
    if not on_gpu:
        runs = "DeepSpeed runs on its CPU accelerator" if config.distributed.deepspeed else "the ranks run"
        result.notes.append(f"no CUDA GPU here: {runs} with the gloo backend.")
    if config.distributed.deepspeed and importlib.util.find_spec("deepspeed") is None:
        missing = (
            f"distributed.deepspeed={config.distributed.deepspeed} but DeepSpeed is not installed on this node: "
            "pip install 'tifa-lite[deepspeed]' (DS_BUILD_OPS=0 keeps the install from compiling CUDA ops)."
        )
        if not dry_run:
            raise ConfigError(missing)
        result.warnings.append(missing + " Every node that runs these commands needs it.")
    if spec.launcher == "deepspeed" and len(spec.hosts) != spec.nnodes:
        raise ConfigError(
            f"--launcher deepspeed needs one host per node: got {len(spec.hosts)} host(s) for nnodes={spec.nnodes}. "
            "Pass --hosts host0,host1 or --hostfile FILE."
        )
    if spec.nnodes > 1 and not local_nodes:
        out = Path(config.train.output_dir)
        mount = mount_of(out, mounts_file)
        if mount is None or mount[1] not in SHARED_FS_TYPES:
            where = f"{mount[1]} mounted at {mount[0]}" if mount else "a filesystem this node cannot identify"
            result.warnings.append(
                f"train.output_dir={out} is on {where}, which does not look shared between nodes. Each node "
                "writes its ZeRO shards of every checkpoint there and resume needs all of them; only node 0 gets the "
                "final model. Put train.output_dir on shared storage (NFS, Lustre, …) if you can."
            )
    return result


def network_interfaces() -> list[str]:
    """Non-loopback interface names, for the NCCL_SOCKET_IFNAME hint."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return []
    skip = ("lo", "docker", "veth", "virbr", "br-")
    return [n for n in names if not n.startswith(skip)]


def rehearsal_env(hardware: Hardware) -> dict[str, str]:
    """Environment for the launched ranks. On the CPU: DeepSpeed's CPU accelerator, named
    rather than detected so every rank agrees, and one thread per rank (two cores shared)."""
    env: dict[str, str] = {}
    if hardware.device != "cuda":
        env["DS_ACCELERATOR"] = "cpu"
        env.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    return env

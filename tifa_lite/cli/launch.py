"""`tifa-lite launch RECIPE [key=value …] --profile h100x16_zero3 --nnodes 2 --nproc-per-node 8 --node-rank R
--master-addr HOST [--master-port P] [--dry-run]`: run (or print) this node's command."""

from __future__ import annotations



def register(sub) -> None:
    p = sub.add_parser("launch", help="start a recipe on several GPUs/nodes (torchrun, accelerate, deepspeed)")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="dotted overrides passed to every rank, e.g. train.max_steps=10")
    p.add_argument("--profile", action="append", help="profile overlay, e.g. h100x16_zero3 (repeatable)")
    p.add_argument("--nnodes", type=int, help="machines (default: the profile's distributed.nnodes)")
    p.add_argument("--nproc-per-node", type=int, help="processes = GPUs per machine (default: the profile's)")
    p.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0 … nnodes-1")
    p.add_argument("--master-addr", help="address of node 0 reachable from every node (required if nnodes > 1)")
    p.add_argument("--master-port", type=int, help="default: the profile's distributed.master_port")
    p.add_argument("--launcher", choices=["torchrun", "accelerate", "deepspeed"], help="default: the profile's")
    p.add_argument("--hosts", help="deepspeed launcher: comma-separated hosts, node 0 first (writes --hostfile)")
    p.add_argument("--hostfile", help="deepspeed launcher: hostfile path (default ./hostfile)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and checks, start nothing")
    p.set_defaults(handler=run)


def run(args) -> int:
    import os
    import subprocess
    from pathlib import Path

    from tifa_lite.config import load_recipe
    from tifa_lite.distributed.batch import plan_for
    from tifa_lite.distributed.launcher import (
        LaunchSpec, build_command, describe_per_node, hostfile_text, nccl_hints, rank_overrides,
        resolve_path_for_nodes,
    )
    from tifa_lite.distributed.preflight import check_launch, network_interfaces, rehearsal_env
    from tifa_lite.distributed.runtime import check_deepspeed_config
    from tifa_lite.errors import ConfigError
    from tifa_lite.hardware import detect

    profiles = list(args.profile or [])
    sizes = [f"distributed.{key}={value}" for key, value in
             (("nnodes", args.nnodes), ("nproc_per_node", args.nproc_per_node)) if value]
    base = load_recipe(args.recipe, [*args.overrides, *sizes], profile=profiles)
    nnodes = args.nnodes or base.distributed.nnodes
    nproc = args.nproc_per_node or base.distributed.nproc_per_node
    launcher = args.launcher or base.distributed.launcher
    if nnodes > 1 and not args.master_addr:
        raise ConfigError(f"nnodes={nnodes}: pass --master-addr, the address of node 0 that every node can reach.")
    hosts = [h.strip() for h in args.hosts.split(",")] if args.hosts else []
    if launcher == "deepspeed" and not hosts and args.hostfile and Path(args.hostfile).is_file():
        hosts = [line.split()[0] for line in Path(args.hostfile).read_text().splitlines() if line.strip()]
    spec = LaunchSpec(
        recipe=args.recipe,
        profiles=profiles,
        overrides=list(args.overrides),
        nnodes=nnodes,
        nproc_per_node=nproc,
        node_rank=args.node_rank,
        master_addr=args.master_addr or "127.0.0.1",
        master_port=args.master_port or base.distributed.master_port,
        launcher=launcher,
        deepspeed_config=resolve_path_for_nodes(base.distributed.deepspeed),
        mixed_precision=base.train.precision if base.train.precision in ("bf16", "fp16") else "no",
        hosts=hosts,
        hostfile=args.hostfile,
    )
    # Resolve exactly what every rank will resolve: this is where world-size and batch errors surface.
    config = load_recipe(args.recipe, rank_overrides(spec), profile=profiles)
    check_deepspeed_config(config)
    plan = plan_for(config)
    hardware = detect()
    checks = check_launch(spec, config, hardware, dry_run=args.dry_run)
    env = {**rehearsal_env(hardware), **config.distributed.env}

    print(f"# {config.train.method} · {'ZeRO-' + str(config.distributed.zero_stage) if config.distributed.zero_stage else 'no ZeRO'}"
          f" · {nnodes} node(s) × {nproc} process(es) = world size {spec.world_size}")
    print(f"# batch: {plan.describe()}")
    for note in checks.notes:
        print(f"# note: {note}")
    for warning in checks.warnings:
        print(f"# WARNING: {warning}")
    if args.dry_run:
        if hardware.device == "cuda" or nnodes > 1:
            print("# NCCL hints (GPU nodes):")
            for line in nccl_hints(network_interfaces()):
                print(f"#   {line}")
        for line in describe_per_node(spec, env):
            print(line)
        return 0
    if launcher == "deepspeed":
        hostfile = Path(args.hostfile or "hostfile")
        if hosts and not (args.hostfile and hostfile.is_file()):
            hostfile.write_text(hostfile_text(spec), encoding="utf-8")
        spec.hostfile = str(hostfile)
    cmd = build_command(spec)
    print(f"# node {spec.node_rank}: {' '.join(cmd)}", flush=True)
    from tifa_lite.interrupts import Interrupted

    proc = subprocess.Popen(cmd, env={**os.environ, **env})
    try:
        return proc.wait()
    except Interrupted as exc:
        # The launcher passes the signal on to every rank, which then stops as a single run does;
        # killing the launcher instead would leave the ranks running.
        proc.send_signal(exc.signum)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise

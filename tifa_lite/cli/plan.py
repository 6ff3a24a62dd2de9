"""`tifa-lite plan RECIPE [key=value …] [--profile P] [--gpu t4|a10|…|cpu] [--json]`:
predicted peak memory of one training step, term by term, and what to change to fit."""

from __future__ import annotations

import json

GPU_CHOICES = ["t4", "a10", "l4", "rtx3090", "rtx4090", "8gb", "a100-40g", "a100-80g", "h100", "cpu"]


def register(sub) -> None:
    p = sub.add_parser("plan", help="predict peak GPU memory of a recipe and suggest settings that fit")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.max_length=4096")
    p.add_argument("--profile", action="append", help="profile overlay from recipes/profiles (repeatable)")
    p.add_argument("--gpu", choices=GPU_CHOICES,
                   help="card to plan for; cpu plans peak RAM (default: hardware.gpu, else this machine's)")
    p.add_argument("--memory-gib", type=float, help="the card's memory, when it differs from the catalogue")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON (last line)")
    p.set_defaults(handler=run)


def _gpu(args, config):
    from tifa_lite.planner import resolve_gpu

    name = args.gpu or config.hardware.gpu
    if name == "auto":
        # Only here does planning touch torch: to ask which card this machine has.
        from tifa_lite.hardware import detect
        from tifa_lite.planner.hardware_catalog import gpu_from_detected

        hw = detect()
        return gpu_from_detected(hw.gpu_name, hw.total_memory_gib, hw.bf16) if hw.device == "cuda" else None
    return resolve_gpu(name, args.memory_gib or config.hardware.memory_gib)


def run(args) -> int:
    from tifa_lite.config import load_recipe
    from tifa_lite.planner import capacity_gib, fits, plan_config, read_model_shape, suggest

    config = load_recipe(args.recipe, args.overrides, profile=args.profile)
    gpu = _gpu(args, config)
    shape = read_model_shape(config.model)
    _, changes, fitted_plan = suggest(config, gpu, shape)
    plan = plan_config(config, gpu, shape)
    ok = fits(plan, gpu)
    if args.json:
        print(json.dumps(_as_json(plan, gpu, ok, changes, fitted_plan, shape)))
        return 0
    print(_report(config, plan, gpu, ok, changes, fitted_plan, shape, capacity_gib(gpu) if gpu else None))
    return 0


def _as_json(plan, gpu, ok, changes, fitted_plan, shape) -> dict:
    return {
        "model": shape.name,
        "params_b": round(shape.total_params / 1e9, 3),
        "gpu": gpu.name if gpu else "cpu",
        "memory_gib": gpu.memory_gib if gpu else None,
        "precision": plan.inp.precision,
        "phase": plan.phase,
        "terms_gib": {k: round(v, 3) for k, v in plan.terms.items()},
        "train_phase_gib": {k: round(v, 3) for k, v in plan.train_phase.items()},
        "generation_phase_gib": {k: round(v, 3) for k, v in plan.generation_phase.items()},
        "activation_bytes_per_token": round(plan.activation_bytes_per_token),
        "activation_bytes_per_token_checkpointed": round(plan.activation_bytes_per_token_ckpt),
        "fits": ok,
        "suggestions": [
            {"key": c.key, "old": c.old, "new": c.new, "why": c.why, "auto_fit_applies": c.applied} for c in changes
        ],
        "merge_self_check": merge_check_line(plan, gpu, shape),
        "problems": plan.problems,
        "warnings": plan.warnings,
        "fitted_peak_gib": round(fitted_plan.peak_gib, 3),
        "peak_gib": round(plan.peak_gib, 3),
    }


def merge_check_line(plan, gpu, shape) -> str:
    from tifa_lite.planner.merge_check import describe_for_card

    dtype = "fp32" if gpu is None else ("bf16" if gpu.bf16 else "fp16")
    return describe_for_card(dtype, shape.total_params * 4, int(gpu.memory_gib * 2**30) if gpu else None)


def _report(config, plan, gpu, ok, changes, fitted_plan, shape, usable) -> str:
    inp = plan.inp
    where = f"{gpu.label}, {gpu.memory_gib:.1f} GiB" if gpu else "CPU (peak RSS)"
    lines = [
        f"model     {shape.name}: {shape.total_params / 1e9:.2f}B params, {shape.layers} layers, "
        f"hidden {shape.hidden}, vocab {shape.vocab}  [{shape.source}]",
        f"run       {config.train.method}, "
        + ("QLoRA 4-bit" if config.is_qlora else "LoRA" if inp.lora else "full fine-tuning")
        + f", {inp.precision}, micro-batch {inp.batch} x {inp.seq_len} tokens"
        + (", gradient checkpointing" if inp.gradient_checkpointing else "")
        + (f", ZeRO-{inp.zero_stage} x{inp.world_size}" if inp.zero_stage else ""),
        f"card      {where}",
        "",
        f"  {'term':<24}{'GiB':>8}",
    ]
    for name, gib in plan.static.items():
        lines.append(f"  {name:<24}{gib:>8.2f}  {plan.notes.get(name, '')}")
    for label, phase in (("train step", plan.train_phase), ("generation", plan.generation_phase)):
        if not phase:
            continue
        mark = " (peak)" if plan.phase == label else ""
        for name, gib in phase.items():
            lines.append(f"  {name:<24}{gib:>8.2f}  {label}{mark}: {plan.notes.get(name, '')}")
    lines += [
        f"  {'peak':<24}{plan.peak_gib:>8.2f}  ({plan.phase})",
        "",
        f"activations per token: {plan.activation_bytes_per_token / 2**20:.2f} MiB, "
        f"{plan.activation_bytes_per_token_ckpt / 2**20:.3f} MiB with gradient checkpointing",
    ]
    lines.append(f"merge     self-check of the merged model: {merge_check_line(plan, gpu, shape)}")
    lines += [f"refused   {p}" for p in plan.problems] + [f"warning   {w}" for w in plan.warnings]
    if gpu is None:
        lines.append("verdict   CPU run: needs about this much free RAM.")
    elif ok:
        lines.append(f"verdict   FITS: {plan.peak_gib:.1f} of {usable:.1f} GiB usable ({gpu.memory_gib - plan.peak_gib:.1f} GiB free)")
    elif plan.problems:
        lines.append("verdict   CANNOT START: see 'refused' above")
    else:
        lines.append(f"verdict   DOES NOT FIT: {plan.peak_gib:.1f} GiB > {usable:.1f} GiB usable")
    if changes:
        lines.append("to fit (train.auto_fit: true applies these; (advice) lines are left to you):")
        for c in changes:
            lines.append(f"  {'' if c.applied else '(advice) '}{c}")
        lines.append(f"  -> planned peak {fitted_plan.peak_gib:.1f} GiB")
    return "\n".join(lines)

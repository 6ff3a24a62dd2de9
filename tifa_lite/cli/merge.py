"""`tifa-lite merge --adapter DIR --output DIR [--dtype bf16|fp16|fp32] [--base-weights auto|original|dequantized] [--base PATH] [--json]`."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("merge", help="merge a LoRA/QLoRA adapter into its 16-bit base, with a self-check")
    p.add_argument("--adapter", required=True, help="adapter folder (a finished run or a checkpoint-* folder)")
    p.add_argument("--output", required=True, help="folder to write the merged model to (must not exist)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32", "auto"],
                   help="dtype of the merged weights (auto: bf16 on a GPU with it, fp16 on a T4, fp32 on the CPU)")
    p.add_argument("--base", help="base model (path, hub id or embedded name); default: the one the adapter records")
    p.add_argument("--base-weights", default="auto", choices=["auto", "original", "dequantized"],
                   help="what ΔW is added to: dequantized = dequant(NF4(W)), the base a QLoRA run trained against; "
                        "original = the 16-bit W (auto: dequantized for a 4-bit run, else original)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    p.add_argument("--max-shard-size", default="1GB", help="largest output safetensors shard (default 1GB; peak RAM grows with it)")
    p.add_argument("--tolerance", type=float, help="max logit difference merged vs base+adapter (default per dtype)")
    p.add_argument("--no-check", action="store_true", help="skip the self-check (not recommended)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on the last line")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.merging import merge

    report = merge(
        args.adapter, args.output, dtype=args.dtype, base=args.base, overwrite=args.overwrite,
        max_shard_size=args.max_shard_size, check=not args.no_check, tolerance=args.tolerance,
        base_weights=args.base_weights,
    )
    print(summary(report))
    if args.json:
        print(json.dumps(report))
    return 0


def summary(report: dict) -> str:
    into = report.get("base_weights", "original")
    into = "dequant(NF4(W))" + (f" [{report['trained_quant']}]" if report.get("trained_quant") else "") if into == "dequantized" else "the original W"
    lines = [f"merged {report['adapter']} + {report['base']} → {report['output']} ({report['dtype']}, {report['method']}; ΔW added to {into})"]
    weights = report.get("weights")
    if weights:
        lines.append(
            f"  weights changed: {weights['changed_tensors']} tensors, {weights['changed_fraction_of_lora_targets']:.1%} of their elements, "
            f"largest relative change {weights['max_relative_change']:.3g}"
        )
    check = report.get("self_check")
    if check:
        lines.append(
            f"  self-check: max logit diff vs {check.get('reference', 'base+adapter')} {check['max_logit_diff_vs_base_plus_adapter']:.3g} "
            f"(tolerance {check['tolerance']:g}) — {'passed' if check['passed'] else 'FAILED'}; "
            f"distance from base {check['max_logit_diff_merged_vs_base']:.3g}; "
            + (f"greedy agreement {check['greedy_agreement']:.0%}" if check.get("greedy_agreement") is not None
               else f"compared {check.get('compared', 'scores')}")
            + f"; ran on {check['device']} ({check.get('placement_reason', '')})"
        )
        trained = check.get("vs_trained")
        if trained:
            div = trained.get("greedy_first_divergence") or {}
            lines.append(
                f"  vs the trained model ({trained['model']}): mean KL {trained['mean_kl']:.3g} nats/token, "
                f"top-1 agreement {trained['top1_agreement']:.1%}"
                + (f", greedy identical on {div['identical']}/{div['prompts']} prompts" if div else "")
            )
        if check.get("warning"):
            lines.append(f"  warning: {check['warning']}")
    if report.get("warning"):
        lines.append(f"  WARNING: {report['warning']}")
    lines.extend(f"  note: {n}" for n in report.get("notes", []))
    return "\n".join(lines)

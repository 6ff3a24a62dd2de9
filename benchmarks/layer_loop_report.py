"""Markdown tables of the looped-layers measurement from its raw JSON lines (one line per arm and seed).

    python benchmarks/layer_loop_report.py benchmarks/results/raw/layer_loop_sft_quiet.jsonl \
        benchmarks/results/raw/layer_loop_grpo.jsonl

SFT lines come from benchmarks/layer_loop_sft.py, GRPO lines from benchmarks/grpo_cpu_demo.py --append.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def grpo_arm(row: dict) -> str:
    if row.get("loop"):
        return "loop, " + ("shared LoRA" if row.get("lora_per_pass") == "false" else "LoRA per pass")
    return "off (equal compute)" if row["layer_forwards"] > 30 * min_steps.get(row["seed"], row["steps"]) else "off"


min_steps: dict[int, int] = {}


def sft_table(rows: list[dict]) -> str:
    by_arm = defaultdict(list)
    for r in rows:
        by_arm[r["arm"]].append(r)
    out = ["| arm | steps | layer-forwards / token × steps | held-out ppl per seed | mean ppl | train loss (mean) | "
           "train CPU s (mean) | wall s (mean) | peak RSS MiB (max) | LoRA params |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for arm in ("off", "per_pass", "shared", "off_compute"):
        rs = sorted(by_arm.get(arm, []), key=lambda r: r["seed"])
        if not rs:
            continue
        out.append(
            f"| {arm} | {rs[0]['steps']} | {rs[0]['layer_forwards']} | "
            + ", ".join(f"s{r['seed']}: {r['heldout_ppl']:.2f}" for r in rs)
            + f" | **{statistics.mean(r['heldout_ppl'] for r in rs):.2f}** | {statistics.mean(r['train_loss'] for r in rs):.3f} | "
            f"{statistics.mean(r['train_cpu_s'] for r in rs):.0f} | {statistics.mean(r['wall_s'] for r in rs):.0f} | "
            f"{max(r['peak_rss_mib'] for r in rs)} | {rs[0]['trainable_params'] / 1e6:.2f}M |")
    return "\n".join(out)


def grpo_table(rows: list[dict]) -> str:
    for r in rows:
        if not r.get("loop"):
            min_steps[r["seed"]] = min(min_steps.get(r["seed"], r["steps"]), r["steps"])
    by_arm = defaultdict(list)
    for r in rows:
        by_arm[grpo_arm(r)].append(r)
    before = [r["heldout_accuracy_before"] for r in rows if r.get("heldout_accuracy_before") is not None]
    out = ["| arm | steps | layer-forwards × steps | held-out accuracy per seed (30 problems) | mean accuracy | "
           "mean reward, first → last steps (mean of seeds) | process CPU s (mean) | peak RSS MiB (max) |",
           "|---|---:|---:|---|---:|---|---:|---:|"]
    for arm, rs in by_arm.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        out.append(
            f"| {arm} | {rs[0]['steps']} | {rs[0]['layer_forwards']} | "
            + ", ".join(f"s{r['seed']}: {r['heldout_accuracy_after']:.1%}" for r in rs)
            + f" | **{statistics.mean(r['heldout_accuracy_after'] for r in rs):.1%}** | "
            f"{statistics.mean(r['reward_first'] for r in rs):.3f} → {statistics.mean(r['reward_last'] for r in rs):.3f} | "
            f"{statistics.mean(r['cpu_s'] for r in rs):.0f} | {max(r['peak_rss_mib'] for r in rs)} |")
    if before:
        out.append(f"\nBase model before training: {before[0]:.1%} on the same 30 problems.")
    return "\n".join(out)


def main() -> None:
    for path in sys.argv[1:]:
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        print(f"\n{path}\n")
        print(sft_table(rows) if "arm" in rows[0] else grpo_table(rows))


if __name__ == "__main__":
    main()

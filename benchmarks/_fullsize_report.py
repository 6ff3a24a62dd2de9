"""The record of benchmarks/gpu_fullsize.py: JSON lines (the environment, then one row per run)
and a markdown table with the planner's error and each run's speed beside the plain TRL script's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLANNER_TARGET = 0.15


def planner_error(row: dict[str, Any], planned_key: str = "planned_allocator_gib") -> float | None:
    measured, planned = row.get("max_allocated_gib"), row.get(planned_key)
    if row.get("status") != "ok" or not measured or planned is None:
        return None
    return (planned - measured) / measured


def speed(row: dict[str, Any]) -> tuple[str, float | None, bool]:
    """(text, figure, higher is faster)."""
    if row.get("tokens_per_s"):
        return f"{row['tokens_per_s']:.0f} tok/s", row["tokens_per_s"], True
    if row.get("median_step_s") is not None:
        gen = row.get("generation_s")
        split = f" (gen {gen:.2f} + rest {row['train_and_rest_s']:.2f})" if gen is not None else ""
        return f"{row['median_step_s']:.2f} s/step{split}", row["median_step_s"], False
    if row.get("merge_s") is not None:
        return f"merge {row['merge_s']:.0f} s", None, False
    return "", None, False


def plain_trl_partner(run_id: str, ids: set[str]) -> str | None:
    """The plain TRL row to compare with: the same lever if it ran, else the same kind and card without."""
    parts = run_id.split("-")
    if len(parts) < 3 or parts[1] != "ours":
        return None
    same = "-".join([parts[0], "trl", *parts[2:]])
    base = "-".join([parts[0], "trl", parts[2]])
    return same if same in ids else base if base in ids else None


def lever_base(run_id: str) -> str | None:
    """The same run without its lever (``sft-ours-a10-liger`` → ``sft-ours-a10``): the lever's own gain."""
    parts = run_id.split("-")
    return "-".join(parts[:3]) if len(parts) == 4 and parts[3] in ("liger", "packed") else None


def table(rows: list[dict[str, Any]]) -> str:
    by_id = {r["id"]: r for r in rows}
    ok = {i for i, r in by_id.items() if r.get("status") == "ok"}
    lines = ["| run | status | planner fits / planned alloc GiB | measured alloc / reserved GiB | planner error "
             "| speed | vs plain TRL | first losses | notes |", "|" + "---|" * 9]
    for r in rows:
        status = r.get("status", "?")
        plan = (f"{'yes' if r['planner_fits'] else 'NO'} / {r['planned_allocator_gib']:.2f}"
                if r.get("planned_allocator_gib") is not None else "")
        measured = (f"{r['max_allocated_gib']:.2f} / {r['max_reserved_gib']:.2f}"
                    if r.get("max_allocated_gib") is not None else
                    (f"RSS {r['peak_rss_gib']:.2f}" if r.get("peak_rss_gib") is not None else ""))
        error = planner_error(r)
        err = "" if error is None else f"{error:+.1%}" + (" (over ±15%)" if abs(error) > PLANNER_TARGET else "")
        widest = r.get("planned_at_widest_batch")
        if widest and error is not None:
            at = planner_error({**r, "planned_allocator_gib": widest["planned_allocator_gib"]})
            err += f"; at the widest batch ({r['widest_batch']} tok) {at:+.1%}"
        text, figure, higher = speed(r)
        partner = plain_trl_partner(r["id"], ok)
        versus = ""
        if partner and figure and r["id"] in ok:
            _, other, _ = speed(by_id[partner])
            if other:
                versus = f"{(figure / other if higher else other / figure):.2f}x ({partner})"
        base = lever_base(r["id"])
        if base in ok and figure and r["id"] in ok:
            _, other, _ = speed(by_id[base])
            if other:
                versus += f"; lever {(figure / other if higher else other / figure):.2f}x vs {base}"
        losses = ", ".join(f"{x:.3g}" for x in r.get("first_losses", []))
        if losses and not r.get("loss_in_range", True):
            losses += " (OUT OF RANGE)"
        notes = []
        if r.get("run_plan"):
            p = r["run_plan"]
            notes.append(f"{p.get('precision')}, {p.get('attention')}" + (", Liger" if p.get("liger_kernel") else ""))
        if r.get("placement"):
            notes.append(f"self-check {'passed' if r.get('self_check_passed') else 'FAILED'} on {r['placement']} "
                         f"(max diff {r['max_logit_diff']:.3g} ≤ {r['tolerance']:.3g})")
        if r.get("note"):
            notes.append(r["note"])
        if r.get("error"):
            notes.append(r["error"][:200].replace("|", "/").replace("\n", " "))
        lines.append(f"| {r['id']} | {status} | {plan} | {measured} | {err} | {text} | {versus} | {losses} | "
                     f"{'; '.join(notes)} |")
    return "\n".join(lines)


def write_report(out: Path, env: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "gpu_fullsize.jsonl").open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"environment": env}, default=str) + "\n")
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    head = [f"# gpu_fullsize: {env['mode']}", "",
            f"{env['date']}, commit {env['commit']}; {env['gpu'] or 'CPU'}"
            + (f" ({env['gpu_memory_gib']} GiB, driver {env['driver']}, CUDA {env['cuda']})" if env["gpu"] else ""),
            f"python {env['python']}, {versions}", f"tokenizer: {env['tokenizer']}", ""]
    text = "\n".join(head) + table(rows) + "\n"
    (out / "gpu_fullsize.md").write_text(text, encoding="utf-8")
    return text

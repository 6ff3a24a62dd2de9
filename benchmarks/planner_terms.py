"""The planner's terms, measured: every family of the model zoo x {T4, A10 rehearsal} x {SFT, DPO,
GRPO}, term by term, planned (tifa_lite.planner.estimate with the zoo model's own shape) against
measured on the CPU (tifa_lite.planner.measure: bytes autograd saves, the KV cache generate
returns, the packed mask, the adapters, their gradients, AdamW's states). Bytes, not time: a busy
machine does not change them.

    python benchmarks/planner_terms.py                       # the whole table (minutes)
    python benchmarks/planner_terms.py --families llama qwen3 --methods grpo
    python benchmarks/planner_terms.py --norm-options        # fp32 stream vs 16-bit norm outputs on a T4

A family the planner cannot plan is listed with the planner's own reason (tifa_lite.planner.shapes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOLERANCE = 0.15


def zoo_dir(family: str, root: Path) -> Path:
    from tifa_lite.modeling.embedded import embedded_checkpoint
    from tifa_lite.modeling.zoo import build_zoo_model

    folder = root / family
    if not (folder / "config.json").is_file():
        build_zoo_model(family, folder, embedded_checkpoint("smollm2-135m-instruct"))
    return folder


def table(families, cards, methods, root: Path) -> tuple[list[str], int]:
    from tifa_lite.errors import ConfigError
    from tifa_lite.modeling.zoo import missing_reason
    from tifa_lite.planner.measure import measure

    lines = ["| family | card | method | term | planned (bytes) | measured (bytes) | planned / measured |",
             "|---|---|---|---|---:|---:|---:|"]
    misses = 0
    for family in families:
        reason = missing_reason(family)
        if reason:
            lines.append(f"| {family} | | | not built: {reason} | | | |")
            continue
        folder = zoo_dir(family, root)
        for card in cards:
            for method in methods:
                try:
                    terms = measure(folder, card, method)
                except ConfigError as exc:  # the planner's named refusal of a family it cannot plan
                    lines.append(f"| {family} | {', '.join(cards)} | {', '.join(methods)} | refused: {exc} | | | |")
                    break
                except Exception as exc:  # the kit cannot train it here: recorded, and counted as a miss
                    misses += 1
                    lines.append(f"| {family} | {card} | {method} | **failed**: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200]} | | | |")
                    print(lines[-1], file=sys.stderr, flush=True)
                    continue
                for term, (planned, measured) in terms.items():
                    ratio = planned / measured if measured else float("nan")
                    miss = not abs(ratio - 1) <= TOLERANCE
                    misses += miss
                    lines.append(f"| {family} | {card} | {method} | {term} | {planned:,.0f} | {measured:,.0f} | "
                                 f"{ratio:.3f}{' **outside ±15 %**' if miss else ''} |")
                    print(lines[-1], file=sys.stderr, flush=True)
            else:
                continue
            break
    return lines, misses


def norm_options(steps: int, seq_len: int) -> list[str]:
    """The two designs for fp32 norms on a T4, on the embedded SmolLM2-135M: saved bytes, KV cache, losses."""
    from tifa_lite.modeling.embedded import embedded_checkpoint
    from tifa_lite.planner.measure import first_steps_losses

    text = (Path(__file__).resolve().parents[1] / "data" / "novel_sample.txt").read_text(encoding="utf-8")
    model = embedded_checkpoint("smollm2-135m-instruct")
    lines = [f"| T4 rehearsal, SmolLM2-135M, QLoRA SFT 2 x {seq_len} tokens | saved for backward (bytes) | KV cache of "
             f"2 x {seq_len + 8} tokens (bytes) | loss per step | loss scale after |", "|---|---:|---:|---|---:|"]
    for label, option in (("fp32 norms, fp32 stream (counted)", False), ("fp32 norms, 16-bit output", True)):
        r = first_steps_losses(model, "t4", text, steps=steps, seq_len=seq_len, norm_output_16bit=option)
        lines.append(f"| {label} | {r['saved_bytes']:,} | {r['kv_cache_bytes']:,} | "
                     f"{' '.join(f'{x:.4f}' for x in r['losses'])} | {r['loss_scale']} |")
        print(json.dumps({"norm_output_16bit": option, **r}), file=sys.stderr, flush=True)
    return lines


def main() -> int:
    from tifa_lite.modeling.zoo import FAMILIES
    from tifa_lite.planner.measure import CARDS, METHODS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--cards", nargs="+", default=list(CARDS), choices=list(CARDS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--norm-options", action="store_true", help="measure the two fp32-norm designs instead")
    ap.add_argument("--steps", type=int, default=6, help="--norm-options: training steps per design")
    ap.add_argument("--seq-len", type=int, default=128, help="--norm-options: tokens per row")
    ap.add_argument("--zoo", type=Path, help="folder to build the zoo models in (default: a temporary one)")
    args = ap.parse_args()
    start = time.time()
    if args.norm_options:
        print("\n".join(norm_options(args.steps, args.seq_len)))
        return 0
    with tempfile.TemporaryDirectory(prefix="tifa_zoo_") as tmp:
        lines, misses = table(args.families, args.cards, args.methods, args.zoo or Path(tmp))
    print("\n".join(lines))
    print(f"\n{misses} term(s) outside ±{TOLERANCE:.0%}; {time.time() - start:.0f} s")
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())

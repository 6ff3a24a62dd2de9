"""Greedy GRPO with the default levers against the levers off, for every zoo family and card:
one step of grpo_qlora_a10.yaml (top_k 1, so both runs generate the same completions) with
grpo.pack_groups / grpo.prefill_once / the dequantised copy at their defaults, then with
``grpo.pack_groups=false grpo.prefill_once=false grpo.dequantize_for_generation=off``; prints the
first step's entropy, loss and KL of each, their difference, and which levers switched
themselves off (and why).

    python benchmarks/zoo_levers.py [--families llama,mistral] [--cards cpu,t4,a10] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tifa_lite.modeling.embedded import embedded_checkpoint  # noqa: E402
from tifa_lite.modeling.zoo import FAMILIES, build_zoo_model  # noqa: E402
from tifa_lite.hardware import rehearsing  # noqa: E402
from tifa_lite.zoo_matrix import CARDS, train_step  # noqa: E402

OFF = {"grpo.pack_groups": False, "grpo.prefill_once": False, "grpo.dequantize_for_generation": "off"}
HEADER = ("| family | card | entropy (levers on) | entropy (off) | loss (on) | loss (off) | max abs diff | levers off |\n"
          "|---|---|---|---|---|---|---|---|")


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        if " off for " in record.getMessage():
            self.lines.append(record.getMessage().split("; the library")[0])


def first_step(model_dir: Path, out: Path, **overrides) -> dict:
    result = train_step("grpo", model_dir, out, **overrides)
    row = json.loads((result.output_dir / "metrics.jsonl").read_text().splitlines()[0])
    return {k: row[k] for k in ("entropy", "loss", "kl")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--cards", default=",".join(CARDS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [HEADER]
    print(HEADER, flush=True)
    handler = Lines()
    logging.getLogger("tifa_lite").addHandler(handler)
    with tempfile.TemporaryDirectory(prefix="tifa-levers-") as tmp:
        for family in args.families.split(","):
            model_dir = build_zoo_model(family, Path(tmp) / family, embedded_checkpoint("smollm2-135m-instruct"))
            for card in args.cards.split(","):
                handler.lines.clear()
                with rehearsing(card):
                    on = first_step(model_dir, Path(tmp) / f"{family}-{card}-on")
                    off_lines = list(dict.fromkeys(handler.lines))
                    off = first_step(model_dir, Path(tmp) / f"{family}-{card}-off", **OFF)
                gap = max(abs(on[k] - off[k]) for k in on)
                row = (f"| {family} | {card} | {on['entropy']:.6f} | {off['entropy']:.6f} | {on['loss']:.6g} | "
                       f"{off['loss']:.6g} | {gap:.2g} | {'; '.join(off_lines) or 'none'} |")
                rows.append(row)
                print(row, flush=True)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

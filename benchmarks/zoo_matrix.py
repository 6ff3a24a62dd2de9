"""Print the model-family matrix (tifa_lite.zoo_matrix): every zoo family × card (CPU fp32, T4
and A10 rehearsals) × step (QLoRA SFT, DPO, GRPO with the default levers, merge + self-check,
one served chat request): ok, ok with a lever off (its reason), refused (reason) or failed.

    python benchmarks/zoo_matrix.py [--families llama,qwen3_5] [--cards cpu,t4] [--gguf] [--out FILE]
    python benchmarks/zoo_matrix.py --rotation [--gguf]   # the default suite's third of the product

Each family's tiny random model is built in a temporary folder next to the embedded tokenizer
(no download). The table goes to stdout and, with --out, to a markdown file."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tifa_lite.modeling.embedded import embedded_checkpoint  # noqa: E402
from tifa_lite.modeling.zoo import FAMILIES, build_zoo_model, missing_reason  # noqa: E402
from tifa_lite.zoo_matrix import CARDS, rotation, run_cell  # noqa: E402

HEADER = "| family | card | step | result |\n|---|---|---|---|"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--cards", default=",".join(CARDS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rotation", action="store_true", help="only the cells the default test suite runs")
    parser.add_argument("--gguf", action="store_true", help="also convert each family with llama.cpp's converter "
                        "(fetches llama-cpp-python's source release once; needs sentencepiece)")
    args = parser.parse_args()
    rows, failed = [HEADER], 0
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="tifa-zoo-") as tmp:
        tokenizer = embedded_checkpoint("smollm2-135m-instruct")
        for family in args.families.split(","):
            reason = missing_reason(family)
            if reason:
                row = f"| {family} | all | all | skipped ({reason}) |"
                rows.append(row)
                print(row, flush=True)
                continue
            model_dir = build_zoo_model(family, Path(tmp) / f"model-{family}", tokenizer)
            if args.rotation:
                plan = [(card, steps) for f, card, steps in rotation(list(FAMILIES)) if f == family]
            else:
                plan = [(card, ("sft", "merge", "serve", "dpo", "grpo")) for card in args.cards.split(",")]
            if args.gguf:  # the converter reads the checkpoint alone: one card says it
                plan.append(("cpu", ("gguf",)))
            for card, steps in plan:
                for step in steps:
                    cell = run_cell(family, card, step, model_dir, Path(tmp))
                    failed += cell.status == "failed"
                    rows.append(cell.row())
                    print(cell.row(), flush=True)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n")
    print(f"{len(rows) - 1} cells, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU demonstration: the anti-repetition builder + DPO lowers the repetition rate of
sampled outputs (Tifa's stage 4) on the embedded SmolLM2-135M-Instruct.

    OMP_NUM_THREADS=1 python benchmarks/dpo_demo_antirepeat.py [--prompts 32] [--heldout 24]

1. prompts: single-turn user questions from ../shared/data/hh_rlhf (rows 0-1499 build
   pairs, rows 1500+ are held out);
2. before: mean rep-3 of sampled answers to the held-out prompts (the base model);
3. `anti_repetition` samples --samples answers per training prompt, keeps the least and
   most repetitive as chosen/rejected (gap >= --min-gap), written to --out/pairs.jsonl;
4. DPO with recipes/dpo_antirepeat.yaml on those pairs (QLoRA);
5. after: the same measurement with the adapter, same seed and sampling settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HH = REPO.parent / "shared" / "data" / "hh_rlhf" / "harmless_base_pairs.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--min-gap", type=float, default=0.05)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup-ratio", type=float, default=0.0)
    ap.add_argument("--out", default="outputs/demo_antirepeat")
    ap.add_argument("--save-sample", default=None, help="also copy the built pairs here (the shipped sample)")
    args = ap.parse_args()

    from tifa_lite.modeling.inference import load_inference_model
    from tifa_lite.pairs import GenerationSettings, anti_repetition, mean_repetition, read_prompts, write_pairs
    from tifa_lite.training.runner import train

    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, *_ = load_inference_model("smollm2-135m-instruct")
    items = read_prompts(str(HH), on_error="skip")

    def single_turn(chunk, n):
        keep = [i for i in chunk if len(i.prompt) == 1 and len(tokenizer(i.prompt[0]["content"])["input_ids"]) <= 48]
        return keep[:n]

    build_items, held = single_turn(items[:1500], args.prompts), single_turn(items[1500:], args.heldout)
    measure = GenerationSettings(num_samples=2, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                 batch_size=16, seed=1234)

    t0 = time.time()
    before = mean_repetition(model, tokenizer, held, measure)
    print(json.dumps({"before": before, "s": round(time.time() - t0)}), flush=True)

    t0 = time.time()
    build = GenerationSettings(num_samples=args.samples, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, batch_size=16, seed=7)
    pairs, report = anti_repetition(model, tokenizer, build_items, build, ngram=3, min_gap=args.min_gap)
    path = write_pairs(pairs, out / "pairs.jsonl")
    if args.save_sample:
        shutil.copyfile(path, REPO / args.save_sample)
    gaps = [p["rejected_score"] - p["chosen_score"] for p in pairs]
    print(json.dumps({"build": vars(report), "mean_gap": sum(gaps) / max(len(gaps), 1),
                      "s": round(time.time() - t0)}), flush=True)
    del model

    t0 = time.time()
    result = train(
        REPO / "recipes" / "dpo_antirepeat.yaml",
        overrides={
            "model.name_or_path": "smollm2-135m-instruct",
            "data.path": str(path), "data.max_length": 48 + args.max_new_tokens + 48,
            "train.num_epochs": args.epochs, "train.per_device_batch_size": 4,
            "train.gradient_accumulation_steps": 1, "train.learning_rate": args.lr,
            # The recorded runs trained without warmup (see benchmarks/results/dpo.md).
            "train.warmup_ratio": args.warmup_ratio,
            "train.gradient_checkpointing": False, "train.save_steps": 10000, "train.logging_steps": 2,
            "train.progress_bar": False, "train.output_dir": str(out / "adapter"),
            "train.overwrite_output_dir": True, "train.resume": "never",
        },
    )
    train_s = time.time() - t0
    print(json.dumps({"train": result.metrics, "steps": result.global_step, "s": round(train_s)}), flush=True)

    t0 = time.time()
    policy, tokenizer, *_ = load_inference_model(None, result.output_dir)
    after = mean_repetition(policy, tokenizer, held, measure)
    print(json.dumps({"after": after, "s": round(time.time() - t0)}), flush=True)
    print(json.dumps({"repetition_before": before["repetition_rate@3"], "repetition_after": after["repetition_rate@3"],
                      "looping_before": before["looping_fraction"], "looping_after": after["looping_fraction"],
                      "n": after["n"], "pairs": report.pairs, "train_steps": result.global_step}))


if __name__ == "__main__":
    main()

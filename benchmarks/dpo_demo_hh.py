"""CPU demonstration: DPO (QLoRA) on the embedded SmolLM2-135M-Instruct over a few hundred
hh-rlhf pairs raises preference accuracy on held-out pairs it never trained on.

    OMP_NUM_THREADS=1 python benchmarks/dpo_demo_hh.py [--train 192] [--heldout 64] [--max-tokens 128]

Train pairs come from rows 0-1499 of ../shared/data/hh_rlhf/harmless_base_pairs.jsonl,
held-out pairs from rows 1500-1999 (only pairs of at most --max-tokens tokens, so the demo
fits a CPU). Accuracy before = the base's log p(chosen) > log p(rejected); after = the DPO
implicit reward (policy relative to the base, adapter disabled), as `tifa-lite eval
preference` computes them; the policy's own log-prob accuracy is printed too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HH = REPO.parent / "shared" / "data" / "hh_rlhf" / "harmless_base_pairs.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=192)
    ap.add_argument("--heldout", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup-ratio", type=float, default=0.0)
    ap.add_argument("--out", default="outputs/demo_dpo_hh")
    args = ap.parse_args()

    from tifa_lite.modeling.inference import load_inference_model
    from tifa_lite.data.preference import pair_token_lengths, read_preference_pairs
    from tifa_lite.evaluation.preference import evaluate_preference
    from tifa_lite.pairs import write_pairs
    from tifa_lite.training.runner import train

    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, *_ = load_inference_model("smollm2-135m-instruct")
    rows = read_preference_pairs(str(HH), on_error="skip").rows  # file order, 4 empty pairs skipped

    def short(pairs, n):
        return [p for p in pairs if max(pair_token_lengths(p, tokenizer)) <= args.max_tokens][:n]

    train_pairs, held = short(rows[:1500], args.train), short(rows[1500:], args.heldout)
    write_pairs(train_pairs, out / "train.jsonl")
    write_pairs(held, out / "heldout.jsonl")
    print(json.dumps({"train_pairs": len(train_pairs), "heldout_pairs": len(held)}))

    t0 = time.time()
    # The base's accuracy depends only on the held-out pairs: reuse it when the same file was scored.
    key = hashlib.sha256((out / "heldout.jsonl").read_bytes()).hexdigest() + f":{args.max_tokens}"
    cache = out / "before.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    if cached.get("key") == key:
        before = cached["before"]
    else:
        before = evaluate_preference(model, tokenizer, held, max_length=args.max_tokens)
        cache.write_text(json.dumps({"key": key, "before": before}))
    print(json.dumps({"before": before, "s": round(time.time() - t0)}), flush=True)
    del model

    t0 = time.time()
    result = train(
        REPO / "recipes" / "dpo_qlora_hh.yaml",
        overrides={
            "model.name_or_path": "smollm2-135m-instruct",
            "lora.r": 16, "lora.alpha": 32,
            "data.path": str(out / "train.jsonl"), "data.format": "preference", "data.eval_ratio": 0.0,
            "data.max_length": args.max_tokens, "train.num_epochs": args.epochs,
            "train.per_device_batch_size": args.batch_size, "train.gradient_accumulation_steps": args.grad_accum,
            "train.learning_rate": args.lr, "train.gradient_checkpointing": False,
            # The recorded runs trained without warmup (see benchmarks/results/dpo.md).
            "train.warmup_ratio": args.warmup_ratio,
            "train.save_steps": 10000, "train.logging_steps": 5, "train.progress_bar": False,
            "train.output_dir": str(out / "adapter"), "train.overwrite_output_dir": True, "train.resume": "never",
        },
    )
    train_s = time.time() - t0
    print(json.dumps({"train": result.metrics, "steps": result.global_step, "s": round(train_s)}))

    t0 = time.time()
    policy, tokenizer, *_ = load_inference_model(None, result.output_dir)
    after = evaluate_preference(policy, tokenizer, held, max_length=args.max_tokens)
    print(json.dumps({"after": after, "s": round(time.time() - t0)}))
    print(json.dumps({"heldout_accuracy_before": before["accuracy"], "heldout_accuracy_after": after["accuracy"],
                      "n": after["n"], "train_steps": result.global_step, "train_seconds": round(train_s)}))


if __name__ == "__main__":
    main()

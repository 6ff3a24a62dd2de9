"""Looped layers vs not, role-play QLoRA SFT on the embedded SmolLM2-135M (30 layers).

One arm per process (so peak RSS is the arm's own), appended as one JSON line to --out:

  off        : the plain model, --steps optimiser steps
  per_pass   : layers 10..19 twice (40 layers computed), a LoRA per pass
  shared     : the same loop, one LoRA shared by both passes
  off_compute: the plain model given the loop's extra compute as steps (steps × 40/30)

Held-out metric: assistant-token perplexity on data/roleplay_sheldon_heldout.jsonl
(tifa_lite.evaluation.roleplay.perplexity), scored on the full-precision base + adapter.
Load-independent figures: steps, layer-forwards (compute ∝ steps × layers computed), peak RSS,
process CPU seconds (user+sys; they grow under contention too, so compare on a quiet machine).

  for arm in off per_pass shared off_compute; do for seed in 1 2; do
    nice -n 15 python benchmarks/layer_loop_sft.py --arm $arm --seed $seed --steps 6 --batch 1 --max-length 256 \
      --heldout-limit 10 --out benchmarks/results/raw/layer_loop_sft.jsonl; done; done
"""

from __future__ import annotations

import argparse
import json
import resource
import time

LOOP = {"start": 10, "end": 20, "repeats": 2}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arm", choices=["off", "per_pass", "shared", "off_compute"], required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--heldout-limit", type=int, default=30)
    parser.add_argument("--work", default="outputs/bench_layer_loop")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from tifa_lite import train
    from tifa_lite.evaluation.roleplay import perplexity, read_conversations
    from tifa_lite.modeling.inference import load_inference_model

    base_layers, looped_layers = 30, 30 + (LOOP["end"] - LOOP["start"]) * (LOOP["repeats"] - 1)
    looped = args.arm in ("per_pass", "shared")
    steps = round(args.steps * looped_layers / base_layers) if args.arm == "off_compute" else args.steps
    overrides = {
        "model.name_or_path": "smollm2-135m-instruct", "data.path": "data/roleplay_sheldon_sample.jsonl",
        "data.eval_ratio": 0.0, "data.max_length": args.max_length, "data.seed": args.seed,
        "train.max_steps": steps, "train.per_device_batch_size": args.batch, "train.gradient_accumulation_steps": 1,
        "train.global_batch_size": args.batch, "train.learning_rate": 2e-4, "train.seed": args.seed,
        "train.gradient_checkpointing": False, "train.output_dir": f"{args.work}/{args.arm}-s{args.seed}",
        "train.overwrite_output_dir": True, "train.save_steps": 10_000, "train.progress_bar": False,
        "lora.r": 16, "lora.alpha": 32,
    }
    if looped:
        overrides.update({f"model.layer_loop.{k}": v for k, v in LOOP.items()})
        overrides["model.layer_loop.lora_per_pass"] = args.arm == "per_pass"
    started = time.time()
    run = train("recipes/sft_qlora_roleplay.yaml", **overrides)
    train_cpu = _cpu_s()
    held = read_conversations("data/roleplay_sheldon_heldout.jsonl")[: args.heldout_limit]
    model, tokenizer, *_ = load_inference_model(None, run.output_dir)
    scored = perplexity(model, tokenizer, held, max_length=args.max_length).as_dict()
    row = {
        "arm": args.arm, "seed": args.seed, "steps": run.global_step, "layers_computed": looped_layers if looped else base_layers,
        "layer_forwards": run.global_step * (looped_layers if looped else base_layers),
        "train_loss": run.metrics.get("train_loss"), "heldout_ppl": scored["ppl"], "heldout_n": scored["n"],
        "heldout_tokens": scored["tokens"], "train_cpu_s": round(train_cpu, 1), "total_cpu_s": round(_cpu_s(), 1),
        "wall_s": round(time.time() - started, 1), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "trainable_params": sum(p.numel() for n, p in model.named_parameters() if "lora_" in n),
        "loadavg_1m_at_end": round(__import__("os").getloadavg()[0], 2), "max_length": args.max_length, "batch": args.batch,
    }
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()

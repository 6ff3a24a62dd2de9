"""Cold start → GRPO on the CPU (Tifa stages 2 → 3): the five R1-Zero rewards, unchanged,
fire only after a chain-of-thought SFT cold start.

    python benchmarks/reasoning_cpu_demo.py [--eval-limit 100] [pipeline overrides: grpo.train.max_steps=40 …]

Runs ``recipes/pipelines/reasoning_cpu.yaml`` (sft_cot_coldstart.yaml on the shipped CoT
sample, merged; then GRPO with the reproduction's five rewards on data/arithmetic/train.jsonl,
merged) through the same ``run_pipeline`` as ``tifa-lite pipeline``, and measures the base,
the cold-start model and the GRPO model on the held-out data/arithmetic/test.jsonl (never
trained on), greedy, with the R1-Zero system prompt:

- strict- and soft-format rates: the share of completions the exact ``strict_format`` /
  ``soft_format`` rewards score (the write-up's regexes), and the lenient variants beside them;
- held-out accuracy: the GSM8K evaluator's extraction (``<answer>``, ``####``, else the last
  number) against the reference;
- mean reward (sum of the weighted rewards, TRL's ``reward`` log) over the first vs the last
  GRPO steps, and each reward's mean over the same windows.

``--save-completions FILE`` keeps a few held-out completions of each model (the real
completions the reward test scores against the write-up's own functions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FORMAT_REWARDS = ("strict_format", "soft_format", "strict_format_lenient", "soft_format_lenient")


def evaluate(model_dir: str, args) -> dict:
    from tifa_lite.evaluation.gsm8k import evaluate_gsm8k
    from tifa_lite.modeling.inference import load_inference_model
    from tifa_lite.rewards import rule

    lm, tokenizer, *_ = load_inference_model(model_dir, precision="fp32")
    result = evaluate_gsm8k(
        None, args.data / "test.jsonl", limit=args.eval_limit, batch_size=args.eval_batch,
        max_new_tokens=args.eval_tokens, loaded=(lm, tokenizer),
    )
    completions = [s["completion"] for s in result["samples"]]
    rates = {name: sum(s > 0 for s in getattr(rule, name)(completions)) / len(completions) for name in FORMAT_REWARDS}
    lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions]
    return {
        "accuracy": result["accuracy"], "correct": result["correct"], "n": result["n"],
        "format_rates": rates, "mean_completion_tokens": round(statistics.mean(lengths), 1),
        "samples": result["samples"],
    }


def reward_windows(adapter_dir: Path, window: int) -> dict:
    from tifa_lite.training.outputs import read_metrics

    steps = [m for m in read_metrics(adapter_dir / "metrics.jsonl") if m.get("reward") is not None]
    w = max(1, min(window, len(steps) // 2))
    first, last = steps[:w], steps[-w:]
    per_reward = {
        key.split("/")[1]: [round(statistics.mean(m[key] for m in first), 4), round(statistics.mean(m[key] for m in last), 4)]
        for key in steps[0] if key.startswith("rewards/") and key.endswith("/mean")
    }
    return {
        "steps": len(steps), "window": w,
        "reward_first_last": [round(statistics.mean(m["reward"] for m in first), 4),
                              round(statistics.mean(m["reward"] for m in last), 4)],
        "per_reward_first_last": per_reward,
        "reward_per_step": [round(m["reward"], 3) for m in steps],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="pipeline overrides, e.g. grpo.train.max_steps=40 output_dir=/tmp/r")
    p.add_argument("--pipeline", type=Path, default=REPO / "recipes" / "pipelines" / "reasoning_cpu.yaml")
    p.add_argument("--data", type=Path, default=REPO / "data" / "arithmetic")
    p.add_argument("--eval-limit", type=int, default=100)
    p.add_argument("--eval-batch", type=int, default=25)
    p.add_argument("--eval-tokens", type=int, default=128)
    p.add_argument("--window", type=int, default=5, help="GRPO steps averaged at the start and at the end")
    p.add_argument("--json", type=Path, help="also write the summary here")
    p.add_argument("--save-completions", type=Path, help="write 12 held-out completions per model here (JSONL)")
    args = p.parse_args()

    from tifa_lite.training.budgets import EMBEDDED
    from tifa_lite.training.pipeline import run_pipeline

    models = {"base": EMBEDDED}
    result = run_pipeline(args.pipeline, args.overrides)
    for stage in result.stages:
        models[stage.name] = str(stage.merged_dir or stage.adapter_dir)
    evaluations = {name: evaluate(path, args) for name, path in models.items()}
    grpo_dir = next(s.adapter_dir for s in result.stages if s.name == "grpo")

    import tifa_lite
    import torch
    import transformers
    import trl

    summary = {
        "command": "python " + " ".join(sys.argv),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "versions": {"tifa_lite": tifa_lite.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__},
        "heldout": {name: {k: v for k, v in e.items() if k != "samples"} for name, e in evaluations.items()},
        "grpo": reward_windows(grpo_dir, args.window),
        "sample_after_grpo": evaluations["grpo"]["samples"][0]["completion"],
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    if args.save_completions:
        # The evaluator keeps the file's order, so sample i is line i; the raw answer is what the
        # write-up's extract_hash_answer reads.
        raw = [json.loads(line)["answer"] for line in (args.data / "test.jsonl").read_text(encoding="utf-8").splitlines()]
        rows = [{"model": name, "gsm8k_answer": raw[i], "completion": s["completion"]}
                for name, e in evaluations.items() for i, s in enumerate(e["samples"][:12])]
        args.save_completions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()

"""GRPO CPU demonstration: LoRA on the embedded SmolLM2-135M-Instruct over easy arithmetic
word problems (benchmarks/make_arithmetic_data.py), through the same ``tifa_lite.train``
path as the CLI. Prints mean reward over the first vs the last steps, and greedy accuracy
on a held-out split (never trained on) before vs after.

    python benchmarks/grpo_cpu_demo.py --steps 30 --eval-limit 50

``--loop START:END:REPEATS`` runs it with ``model.layer_loop`` (issue 26's looped-vs-not
arms, benchmarks/results/layer_loop.md); ``--compute-steps-as-loop START:END:REPEATS`` gives
an unlooped run the loop's extra compute as more steps (steps × looped/plain layers).

The 135M model cannot follow the R1-Zero <think>/<answer> format (all five rule rewards
score 0 on it, so GRPO would get no signal), so the demonstration scores what it can do:
``final_number`` (the evaluator's answer extraction vs the reference) plus
``answer_sentence`` (benchmarks/grpo_demo_rewards.py, by file reference: ends with "The
answer is N."). ``--rewards length`` swaps the latter for the ``length`` reward (TRL's soft
overlong punishment): that variant teaches brevity, and on this model brevity alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEMO_SYSTEM_PROMPTS = {
    "answer": "Solve the math problem briefly. End with: The answer is <number>.",
    "length": "Solve the math problem. Answer in one short sentence that ends with the number.",
}


def demo_rewards(args) -> list[dict]:
    if args.rewards == "length":
        cache = args.max_completion // 2
        return [{"name": "final_number", "weight": 1.0},
                {"name": "length", "weight": 0.5, "kwargs": {"max_completion_len": args.max_completion, "soft_punish_cache": cache}}]
    return [{"name": "final_number", "weight": 1.0},
            {"name": f"{REPO / 'benchmarks' / 'grpo_demo_rewards.py'}:answer_sentence", "weight": 1.0}]


def parse_loop(text: str | None) -> dict | None:
    if not text:
        return None
    start, end, repeats = (int(x) for x in text.split(":"))
    return {"start": start, "end": end, "repeats": repeats}


def layers_computed(loop: dict | None, base_layers: int = 30) -> int:
    return base_layers if loop is None else base_layers + (loop["end"] - loop["start"]) * (loop["repeats"] - 1)


def train_steps(args) -> int:
    """--steps, or for an equal-compute arm the steps whose layer-forwards match the loop's."""
    loop = parse_loop(args.compute_steps_as_loop)
    return args.steps if loop is None else round(args.steps * layers_computed(loop) / layers_computed(None))


def demo_config(args) -> dict:
    model: dict = {"name_or_path": "smollm2-135m-instruct"}
    loop = parse_loop(args.loop)
    if loop is not None:
        model["layer_loop"] = {**loop, **({} if args.lora_per_pass is None else {"lora_per_pass": args.lora_per_pass == "true"})}
    return {
        "model": model,
        "quant": {"bits": 4 if args.qlora else None},
        "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.0},
        "data": {"path": str(args.data / "train.jsonl"), "format": "gsm8k", "system_prompt": DEMO_SYSTEM_PROMPTS[args.rewards]},
        "train": {
            "method": "grpo", "output_dir": str(args.out), "overwrite_output_dir": True, "resume": "never",
            "max_steps": train_steps(args), "per_device_batch_size": args.batch, "gradient_accumulation_steps": 1,
            "learning_rate": args.lr, "lr_scheduler": "constant", "warmup_ratio": 0.0, "max_grad_norm": 1.0,
            "logging_steps": 1, "save_steps": 10_000, "progress_bar": False, "seed": args.seed,
        },
        "grpo": {
            "num_generations": args.generations, "max_completion_length": args.max_completion,
            "temperature": args.temperature, "beta": 0.0, "use_vllm": "off", "rewards": demo_rewards(args),
        },
    }


def evaluate(lm, tokenizer, args) -> dict:
    from tifa_lite.evaluation.gsm8k import evaluate_gsm8k

    return evaluate_gsm8k(
        None, args.data / "test.jsonl", limit=args.eval_limit, batch_size=args.eval_batch,
        max_new_tokens=args.eval_tokens, system_prompt=DEMO_SYSTEM_PROMPTS[args.rewards], loaded=(lm, tokenizer),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "arithmetic")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "grpo_cpu_demo")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="completions per step (prompts x generations)")
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--max-completion", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--rewards", choices=["answer", "length"], default="answer")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qlora", action="store_true", help="4-bit base (slower on a CPU: dequantisation per token)")
    p.add_argument("--eval-limit", type=int, default=30)
    p.add_argument("--eval-batch", type=int, default=30)
    p.add_argument("--eval-tokens", type=int, default=48)
    p.add_argument("--window", type=int, default=5, help="steps averaged at the start and at the end")
    p.add_argument("--loop", help="model.layer_loop as START:END:REPEATS (e.g. 10:20:2)")
    p.add_argument("--lora-per-pass", choices=["true", "false"], help="model.layer_loop.lora_per_pass (default: the key's)")
    p.add_argument("--compute-steps-as-loop", help="unlooped, with steps scaled to the compute of START:END:REPEATS")
    p.add_argument("--skip-before", action="store_true", help="skip the held-out evaluation before training")
    p.add_argument("--append", type=Path, help="also append the summary as one JSON line to this file")
    args = p.parse_args()

    from tifa_lite.modeling.inference import load_inference_model
    from tifa_lite.training.outputs import read_metrics
    from tifa_lite.training.runner import train

    t0 = time.time()
    before = None
    if not args.skip_before:
        lm, tok, *_ = load_inference_model("smollm2-135m-instruct", precision="fp32")
        before = evaluate(lm, tok, args)
        del lm
    t_eval = time.time() - t0

    result = train(demo_config(args))
    t_train = time.time() - t0 - t_eval

    lm, tok, *_ = load_inference_model(None, result.output_dir, precision="fp32")
    after = evaluate(lm, tok, args)

    metrics = [m for m in read_metrics(result.output_dir / "metrics.jsonl") if m.get("reward") is not None]
    rewards = [m["reward"] for m in metrics]
    w = min(args.window, len(rewards) // 2) or 1
    first, last = statistics.mean(rewards[:w]), statistics.mean(rewards[-w:])
    parts = {k.split("/")[1]: (statistics.mean(m[k] for m in metrics[:w]), statistics.mean(m[k] for m in metrics[-w:]))
             for k in metrics[0] if k.startswith("rewards/") and k.endswith("/mean")}
    lengths = (statistics.mean(m["completions/mean_length"] for m in metrics[:w]),
               statistics.mean(m["completions/mean_length"] for m in metrics[-w:]))
    summary = {
        "command": "python " + " ".join(sys.argv),
        "steps": len(rewards),
        "reward_first": round(first, 4), "reward_last": round(last, 4), "window": w,
        "per_reward_first_last": {k: [round(a, 4), round(b, 4)] for k, (a, b) in parts.items()},
        "completion_length_first_last": [round(x, 1) for x in lengths],
        "heldout_accuracy_before": before and before["accuracy"], "heldout_accuracy_after": after["accuracy"],
        "heldout_n": after["n"], "seed": args.seed, "loop": parse_loop(args.loop), "lora_per_pass": args.lora_per_pass,
        "layer_forwards": len(rewards) * layers_computed(parse_loop(args.loop)),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "reward_per_step": [round(r, 4) for r in rewards],
        "minutes_eval_before": round(t_eval / 60, 1), "minutes_train": round(t_train / 60, 1),
        "minutes_total": round((time.time() - t0) / 60, 1),
        "sample_after": after["samples"][0]["completion"],
    }
    print(json.dumps(summary, indent=1))
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()

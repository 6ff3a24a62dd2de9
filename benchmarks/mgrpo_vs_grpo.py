"""MGRPO (grpo.passes=2) vs plain GRPO on the CPU: LoRA on the embedded SmolLM2-135M-Instruct
over the shipped arithmetic problems (data/arithmetic), through ``tifa_lite.train``.

    python benchmarks/mgrpo_vs_grpo.py --steps 20 --eval-limit 100 --json-out /tmp/mgrpo_vs_grpo.json

Same optimizer steps and the same generation budget: MGRPO takes ``--prompts`` prompts x
``--generations`` completions in pass 1 and at most as many again in pass 2 (one revised
group per prompt), so plain GRPO gets twice the prompts per step (``2 x --prompts``): both
then generate and train on at most the same number of completions per step. The tokens
each run actually processed (TRL's ``num_tokens``) are reported beside the results.
``--variants mgrpo,grpo,grpo_same_prompts`` adds plain GRPO on MGRPO's prompts alone (half
the completions): whether pass 2 is worth more than not generating it at all.

Rewards are the GRPO CPU demonstration's (benchmarks/grpo_cpu_demo.py), because the 135M
model never writes <answer> tags: ``final_number`` (1.0 when the evaluator's extraction
equals the reference) + ``answer_sentence`` (0.5 for ending with "The answer is N.").
MGRPO revises a group when its lowest completion scores below 1.0 (its number is wrong).

Reported: pass-1 vs pass-2 reward during MGRPO training (on the groups that were revised),
and greedy held-out accuracy on data/arithmetic/test.jsonl before training and after each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from grpo_cpu_demo import demo_config, evaluate  # noqa: E402

ANSWER_SENTENCE_CRITIQUE = "End with the sentence: The answer is <number>."


def variant_config(args, variant: str) -> dict:
    # grpo_same_prompts: plain GRPO on MGRPO's prompts per step, i.e. without pass 2's extra completions.
    prompts = 2 * args.prompts if variant == "grpo" else args.prompts
    run_args = argparse.Namespace(**{**vars(args), "batch": prompts * args.generations, "rewards": "answer",
                                     "out": args.out / variant})
    config = demo_config(run_args)
    # Micro-batches of half the generation batch: the same update (DAPO normalises by the tokens of the whole
    # generation batch), at about half the peak memory of one 16-row forward.
    config["train"].update(per_device_batch_size=run_args.batch // args.accumulation,
                           gradient_accumulation_steps=args.accumulation)
    if variant == "mgrpo":
        config["grpo"]["passes"] = 2
        config["grpo"]["revision"] = {"threshold": args.threshold, "critiques": {"answer_sentence": ANSWER_SENTENCE_CRITIQUE}}
    return config


def mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.mean(values), 4) if values else None


def summarise(metrics: list[dict], window: int) -> dict:
    steps = [m for m in metrics if m.get("reward") is not None]
    w = min(window, len(steps) // 2) or 1
    out = {
        "steps": len(steps),
        "num_tokens": steps[-1].get("num_tokens"),
        "final_number_first_last": [mean(steps[:w], "rewards/final_number/mean"), mean(steps[-w:], "rewards/final_number/mean")],
    }
    if any("mgrpo/pass1_reward" in m for m in steps):
        revised = [m for m in steps if m.get("mgrpo/pass2_reward") is not None]
        out.update({
            "pass1_reward_mean": mean(steps, "mgrpo/pass1_reward"),
            "revised_steps": len(revised),
            "revised_groups_total": sum(m["mgrpo/revised_groups"] for m in steps),
            "revised_groups_pass1_reward_mean": mean(revised, "mgrpo/pass1_reward_revised_groups"),
            "pass2_reward_mean": mean(revised, "mgrpo/pass2_reward"),
            "pass2_beats_pass1_steps": sum(m["mgrpo/pass2_reward"] > m["mgrpo/pass1_reward_revised_groups"] for m in revised),
            "per_reward_pass1_revised_vs_pass2": {
                key.split("/")[-1]: [mean(revised, key), mean(revised, key.replace("pass1_revised", "pass2"))]
                for key in sorted(revised[0]) if key.startswith("mgrpo/pass1_revised/")
            } if revised else {},
            "per_step_pass1_revised_vs_pass2": [[round(m["mgrpo/pass1_reward_revised_groups"], 3),
                                                 round(m["mgrpo/pass2_reward"], 3)] for m in revised],
        })
    else:
        out["reward_mean"] = mean(steps, "reward")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "arithmetic")
    p.add_argument("--out", type=Path, default=Path("/tmp/mgrpo_vs_grpo"))
    p.add_argument("--variants", default="mgrpo,grpo")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompts", type=int, default=1, help="MGRPO prompts per step (plain GRPO gets twice as many)")
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--threshold", type=float, default=1.0)
    p.add_argument("--accumulation", type=int, default=2, help="micro-batches per step (TRL's steps_per_generation)")
    p.add_argument("--max-completion", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qlora", action="store_true")
    p.add_argument("--eval-limit", type=int, default=100)
    p.add_argument("--eval-batch", type=int, default=25)
    p.add_argument("--eval-tokens", type=int, default=48)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    args.rewards = "answer"

    from tifa_lite.modeling.inference import load_inference_model
    from tifa_lite.training.outputs import read_metrics
    from tifa_lite.training.runner import train

    lm, tok, *_ = load_inference_model("smollm2-135m-instruct", precision="fp32")
    before = evaluate(lm, tok, args)
    del lm
    summary = {"command": "python " + " ".join(sys.argv), "heldout_n": before["n"],
               "heldout_accuracy_before": before["accuracy"], "variants": {}}
    for variant in args.variants.split(","):
        result = train(variant_config(args, variant))
        lm, tok, *_ = load_inference_model(None, result.output_dir, precision="fp32")
        after = evaluate(lm, tok, args)
        del lm
        summary["variants"][variant] = {
            "heldout_accuracy_after": after["accuracy"],
            **summarise(read_metrics(result.output_dir / "metrics.jsonl"), args.window),
            "sample_after": after["samples"][0]["completion"],
        }
        if args.json_out:  # written after each variant, so a long run keeps what it finished
            args.json_out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

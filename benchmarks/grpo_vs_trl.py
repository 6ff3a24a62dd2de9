"""GRPO step time: tifa_lite's ``train()`` path vs a plain TRL GRPOTrainer script with the
same model, LoRA, data, rewards and settings, measured side by side in one process,
alternating (ours, TRL, ours, TRL, …) so drift in machine load hits both alike.

    python benchmarks/grpo_vs_trl.py --rounds 2 --steps 3

Step time is TRL's own ``step_time`` log (generation + reward + loss + optimizer step),
averaged over each run's steps after the first (which pays one-off warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def settings(args) -> dict:
    return dict(
        data=str(args.data), rows=args.rows, steps=args.steps, batch=args.batch, generations=args.generations,
        max_completion=args.max_completion, lr=1e-4, r=16, alpha=32, seed=0,
    )


def run_ours(s: dict, out: Path) -> list[float]:
    from tifa_lite.training.outputs import read_metrics
    from tifa_lite.training.runner import train

    result = train({
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "quant": {"bits": None},
        "lora": {"enabled": True, "r": s["r"], "alpha": s["alpha"], "dropout": 0.0},
        "data": {"path": s["data"], "format": "gsm8k", "limit": s["rows"], "shuffle": False},
        "train": {"method": "grpo", "output_dir": str(out), "max_steps": s["steps"], "per_device_batch_size": s["batch"],
                  "learning_rate": s["lr"], "lr_scheduler": "constant", "warmup_ratio": 0.0, "logging_steps": 1,
                  "save_steps": 10_000, "progress_bar": False, "seed": s["seed"],
                  # TRL's GRPOConfig checkpoints activations by default; compare like with like.
                  "gradient_checkpointing": True},
        "grpo": {"num_generations": s["generations"], "max_completion_length": s["max_completion"],
                 "temperature": 1.0, "beta": 0.0, "use_vllm": "off",
                 "rewards": [{"name": n} for n in ("xmlcount", "soft_format", "strict_format", "int_answer", "correctness")]},
    })
    return [m["step_time"] for m in read_metrics(result.output_dir / "metrics.jsonl") if "step_time" in m]


def run_plain_trl(s: dict, out: Path) -> list[float]:
    """What a user would write with TRL alone (the rule functions are plain callables here)."""
    import json as _json

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from tifa_lite.data.gsm8k import R1_ZERO_SYSTEM_PROMPT
    from tifa_lite.modeling.embedded import embedded_checkpoint
    from tifa_lite.rewards import rule

    path = embedded_checkpoint("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    rows = []
    for line in Path(s["data"]).read_text(encoding="utf-8").splitlines()[: s["rows"]]:
        row = _json.loads(line)
        rows.append({"prompt": [{"role": "system", "content": R1_ZERO_SYSTEM_PROMPT},
                                {"role": "user", "content": row["question"]}],
                     "answer": row["answer"].split("####")[-1].strip()})
    args = GRPOConfig(
        output_dir=str(out), max_steps=s["steps"], per_device_train_batch_size=s["batch"], learning_rate=s["lr"],
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", seed=s["seed"],
        num_generations=s["generations"], max_completion_length=s["max_completion"], temperature=1.0, beta=0.0,
        disable_tqdm=True, shuffle_dataset=False,
        # TRL defaults to bf16=True, which stops on a CPU; tifa_lite picks precision from the hardware.
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), use_cpu=not torch.cuda.is_available(),
    )
    trainer = GRPOTrainer(
        model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
        reward_funcs=[rule.xmlcount, rule.soft_format, rule.strict_format, rule.int_answer, rule.correctness],
        peft_config=LoraConfig(r=s["r"], lora_alpha=s["alpha"], lora_dropout=0.0, target_modules="all-linear",
                               task_type="CAUSAL_LM"),
    )
    trainer.train()
    return [h["step_time"] for h in trainer.state.log_history if "step_time" in h]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "arithmetic" / "train.jsonl")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=4, help="completions per step")
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--max-completion", type=int, default=24)
    args = p.parse_args()
    s = settings(args)
    times: dict[str, list[float]] = {"tifa_lite": [], "plain_trl": []}
    wall: dict[str, float] = {"tifa_lite": 0.0, "plain_trl": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, fn in (("tifa_lite", run_ours), ("plain_trl", run_plain_trl)):
                t0 = time.time()
                steps = fn(s, Path(tmp) / f"{name}_{r}")
                wall[name] += time.time() - t0
                times[name].extend(steps[1:])
                print(f"round {r} {name}: step times {[round(x, 2) for x in steps]}", flush=True)
    ours, trl = statistics.mean(times["tifa_lite"]), statistics.mean(times["plain_trl"])
    print(json.dumps({
        "command": "python " + " ".join(sys.argv), "settings": s,
        "mean_step_s": {"tifa_lite": round(ours, 2), "plain_trl": round(trl, 2)},
        "ratio_ours_over_trl": round(ours / trl, 3),
        "median_step_s": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "steps_measured": {k: len(v) for k, v in times.items()},
        "wall_s_including_load": {k: round(v, 1) for k, v in wall.items()},
    }, indent=1))


if __name__ == "__main__":
    main()

"""Our DPO (``tifa_lite.train`` with recipes/dpo_qlora_hh.yaml) against a plain TRL
DPOTrainer script with the same settings, in one run: step time and peak RSS.

    OMP_NUM_THREADS=1 python benchmarks/dpo_vs_trl.py [--steps 6] [--pairs 24]

Both sides: embedded SmolLM2-135M-Instruct, 4-bit NF4 (double quant) + LoRA r16/α32 on all
linear layers, batch 2, max_length 128, lr 5e-5, fp32 on the CPU, the same pairs (written
once in TRL's conversational form), the same seed. Each side runs in its own subprocess so
its peak RSS (ru_maxrss) is its own. Step time = TRL's ``train_runtime`` / steps (the
training loop only); wall = the whole process (imports, load, data prep, save).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(r=16, alpha=32, batch=2, max_length=128, lr=5e-5, seed=42)


def run_ours(pairs: str, steps: int, out: str) -> dict:
    from tifa_lite.training.runner import train

    result = train(REPO / "recipes" / "dpo_qlora_hh.yaml", overrides={
        "model.name_or_path": "smollm2-135m-instruct", "lora.r": SETTINGS["r"], "lora.alpha": SETTINGS["alpha"],
        "lora.dropout": 0.05, "data.path": pairs, "data.format": "preference", "data.eval_ratio": 0.0,
        "data.shuffle": False, "data.max_length": SETTINGS["max_length"], "data.overlength": "truncate",
        "train.max_steps": steps, "train.per_device_batch_size": SETTINGS["batch"],
        "train.gradient_accumulation_steps": 1, "train.learning_rate": SETTINGS["lr"],
        "train.gradient_checkpointing": False, "train.warmup_ratio": 0.0, "train.logging_steps": 1, "train.save_steps": 10000,
        "train.progress_bar": False, "train.output_dir": out, "train.seed": SETTINGS["seed"],
    })
    return {"train_runtime": result.metrics["train_runtime"], "steps": result.global_step,
            "train_loss": result.metrics["train_loss"]}


def run_plain(pairs: str, steps: int, out: str) -> dict:
    """What a user writes with TRL alone (the TRL docs' QLoRA DPO example, sized to match)."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import DPOConfig, DPOTrainer

    from tifa_lite.modeling.embedded import embedded_checkpoint

    path = str(embedded_checkpoint("smollm2-135m-instruct"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32))
    model.config.use_cache = False
    dataset = load_dataset("json", data_files=pairs, split="train")
    args = DPOConfig(
        output_dir=out, max_steps=steps, per_device_train_batch_size=SETTINGS["batch"],
        learning_rate=SETTINGS["lr"], lr_scheduler_type="cosine", max_grad_norm=0.3,  # no warmup on either side
        beta=0.1, max_length=SETTINGS["max_length"], bf16=False, fp16=False, gradient_checkpointing=False,
        logging_steps=1, save_strategy="no", report_to="none", seed=SETTINGS["seed"], data_seed=SETTINGS["seed"],
        disable_tqdm=True, optim="adamw_torch", weight_decay=0.0,
    )
    peft_config = LoraConfig(r=SETTINGS["r"], lora_alpha=SETTINGS["alpha"], lora_dropout=0.05,
                             target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    metrics = trainer.train().metrics
    trainer.save_model(out)
    return {"train_runtime": metrics["train_runtime"], "steps": trainer.state.global_step,
            "train_loss": metrics["train_loss"]}


def child(side: str, pairs: str, steps: int, out: str) -> None:
    t0 = time.time()
    result = (run_ours if side == "ours" else run_plain)(pairs, steps, out)
    result["wall_s"] = time.time() - t0
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def median_run(runs: list[dict]) -> dict:
    """The run with the median training time (its loss, RSS and wall time travel with it)."""
    return sorted(runs, key=lambda r: r["train_runtime"])[len(runs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=1, help="runs per side, alternating order")
    ap.add_argument("--child", choices=["ours", "plain"])
    ap.add_argument("--data")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.data, args.steps, args.out)

    from tifa_lite.data.preference import read_preference_pairs
    from tifa_lite.pairs import write_pairs

    work = Path(tempfile.mkdtemp(prefix="dpo_vs_trl_"))
    rows = read_preference_pairs(str(REPO / "data" / "hh_rlhf_sample.jsonl")).rows[: args.pairs]
    pairs = str(write_pairs(rows, work / "pairs.jsonl"))
    # Alternate the sides (plain, ours, ours, plain, …) so order and drifting load hit both alike;
    # report the median of each side's rounds.
    runs: dict[str, list[dict]] = {"plain": [], "ours": []}
    for r in range(args.rounds):
        for side in (("plain", "ours") if r % 2 == 0 else ("ours", "plain")):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", side, "--data", pairs, "--steps", str(args.steps),
                 "--out", str(work / f"{side}{r}")],
                capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"),
            )
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            runs[side].append(json.loads(line[-1][7:]))
            print(f"round {r} {side}", json.dumps(runs[side][-1]), flush=True)
    results = {side: median_run(rs) for side, rs in runs.items()}
    ours, plain = results["ours"], results["plain"]
    step = {k: v["train_runtime"] / v["steps"] for k, v in results.items()}
    print(f"| | plain TRL | tifa_lite | ratio (ours/plain) |\n|---|---|---|---|\n"
          f"| step time (s) | {step['plain']:.2f} | {step['ours']:.2f} | {step['ours'] / step['plain']:.2f} |\n"
          f"| peak RSS (MiB) | {plain['peak_rss_mib']:.0f} | {ours['peak_rss_mib']:.0f} | "
          f"{ours['peak_rss_mib'] / plain['peak_rss_mib']:.2f} |\n"
          f"| process wall (s) | {plain['wall_s']:.0f} | {ours['wall_s']:.0f} | {ours['wall_s'] / plain['wall_s']:.2f} |\n"
          f"| train loss | {plain['train_loss']:.4f} | {ours['train_loss']:.4f} | |")


if __name__ == "__main__":
    main()

"""fp32 vs bf16 QLoRA adapters on the CPU: learning effect and memory, one SFT and one
GRPO run per adapter dtype, each in its own process (so peak RSS is its own).

    OMP_NUM_THREADS=1 python benchmarks/adapter_dtype.py --method sft --steps 30
    OMP_NUM_THREADS=1 python benchmarks/adapter_dtype.py --method grpo --steps 12

"bf16" is what TRL 1.16 does to every trainable weight of a quantised model; "fp32" is
the alternative. Both go through tifa_lite's method code (``build_trainer`` →
``compose_trainer``), with the run plan's adapter dtype pinned to the variant.
Compute is fp32 (the CPU; no autocast), so what differs is only the dtype the adapter
weights and their Adam states are stored and updated in: the effect this measures.

Per variant: held-out metric before/after (SFT: loss on the assistant tokens of 32
held-out role-play conversations; GRPO: greedy accuracy on 30 held-out arithmetic
problems), the share of adapter weights that never moved from their initial value,
trainable parameter bytes (weights + grads + Adam's two states), and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SFT_RECIPE = REPO / "recipes" / "sft_qlora_roleplay.yaml"
GRPO_RECIPE = REPO / "recipes" / "grpo_qlora_t4.yaml"
HELDOUT_ROLEPLAY = REPO / "data" / "roleplay_sheldon_heldout.jsonl"
ARITHMETIC = REPO / "data" / "arithmetic"
GRPO_SYSTEM = "Solve the math problem briefly. End with: The answer is <number>."


def overrides(method: str, steps: int, lr: float | None, out: Path) -> dict:
    common = {
        "model.name_or_path": "smollm2-135m-instruct", "train.output_dir": str(out), "train.max_steps": steps,
        "train.gradient_accumulation_steps": 1, "train.global_batch_size": None, "train.warmup_ratio": 0.0,
        "train.lr_scheduler": "constant", "train.logging_steps": 1, "train.save_steps": 10_000,
        "train.gradient_checkpointing": False, "train.progress_bar": False, "train.auto_fit": False,
        "train.seed": 0, "train.precision": "fp32", "quant.compute_dtype": "auto", "lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.0, "data.eval_ratio": 0.0,
    }
    if method == "sft":
        # The role-play SFT recipe's learning rate (2e-4), on the shipped sample.
        return {**common, "train.per_device_batch_size": 4, "data.max_length": 384,
                "train.learning_rate": lr or 2e-4}
    # The QLoRA GRPO recipes' learning rate (2e-5), on easy arithmetic the 135M model can score on.
    return {**common, "train.per_device_batch_size": 8, "train.learning_rate": lr or 2e-5,
            "data.path": str(ARITHMETIC / "train.jsonl"), "data.format": "gsm8k", "data.system_prompt": GRPO_SYSTEM,
            "grpo.num_generations": 4, "grpo.max_completion_length": 32, "grpo.temperature": 0.8, "grpo.beta": 0.0,
            "grpo.use_vllm": "off",
            "grpo.rewards": [{"name": "final_number", "weight": 1.0},
                             {"name": f"{REPO / 'benchmarks' / 'grpo_demo_rewards.py'}:answer_sentence", "weight": 1.0}]}


def heldout_metric(method: str, model, tokenizer) -> float:
    if method == "sft":
        from tifa_lite.evaluation.roleplay import perplexity, read_conversations

        return perplexity(model, tokenizer, read_conversations(HELDOUT_ROLEPLAY, limit=32), max_length=384).nll
    from tifa_lite.evaluation.gsm8k import evaluate_gsm8k

    return evaluate_gsm8k(None, ARITHMETIC / "test.jsonl", limit=30, batch_size=30, max_new_tokens=48,
                          system_prompt=GRPO_SYSTEM, loaded=(model, tokenizer))["accuracy"]


def run_variant(method: str, dtype_name: str, steps: int, lr: float | None, out: Path) -> dict:
    import torch

    import dataclasses

    from tifa_lite.config import load_recipe
    from tifa_lite.methods import get_method
    from tifa_lite.methods.common import Run
    from tifa_lite.modeling import load_for_training
    from tifa_lite.modeling.dtypes import trainable_dtypes

    from tifa_lite.runplan import resolve_plan

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    config = load_recipe(SFT_RECIPE if method == "sft" else GRPO_RECIPE, overrides(method, steps, lr, out))
    plan = resolve_plan(config)
    # The variant under test: the plan's adapter dtype, which compose_trainer applies after TRL.
    plan = dataclasses.replace(plan, numerics=dataclasses.replace(plan.numerics, adapter_dtype=dtype_name))
    model, tokenizer, peft_config = load_for_training(config, plan)
    run = Run(config=config, work_dir=out, model=model, tokenizer=tokenizer, peft_config=peft_config, plan=plan)
    trainer = get_method(method).build_trainer(run)
    peft_model = trainer.model
    adapters = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    initial = {n: p.detach().clone() for n, p in adapters.items()}
    peft_model.eval()
    before = heldout_metric(method, peft_model, tokenizer)  # lora_B starts at zero: this is the base model
    peft_model.train()
    trainer.train()
    peft_model.eval()
    after = heldout_metric(method, peft_model, tokenizer)
    total = sum(p.numel() for p in adapters.values())
    frozen = {part: 0 for part in ("lora_A", "lora_B")}
    sizes = {part: 0 for part in ("lora_A", "lora_B")}
    for name, param in adapters.items():
        part = "lora_A" if "lora_A" in name else "lora_B" if "lora_B" in name else None
        if part:
            frozen[part] += int((param.detach() == initial[name]).sum())
            sizes[part] += param.numel()
    logs = [h for h in trainer.state.log_history if "loss" in h or "reward" in h]
    key = "loss" if method == "sft" else "reward"
    series = [h[key] for h in logs if key in h]
    window = max(1, min(5, len(series) // 2))
    bytes_per = dtype.itemsize
    return {
        "method": method, "adapter_dtype": dtype_name, "steps": trainer.state.global_step,
        "learning_rate": config.train.learning_rate,
        "trainable_dtypes": trainable_dtypes(peft_model), "trainable_params": total,
        # weights + gradients + Adam exp_avg + exp_avg_sq, all in the parameter's dtype (torch AdamW)
        "trainable_state_mib": round(4 * total * bytes_per / 2**20, 2),
        "unchanged_share": {part: round(frozen[part] / sizes[part], 4) for part in frozen if sizes[part]},
        f"train_{key}_first{window}": round(sum(series[:window]) / window, 4),
        f"train_{key}_last{window}": round(sum(series[-window:]) / window, 4),
        "heldout_before": round(before, 4), "heldout_after": round(after, 4),
        "heldout_metric": "assistant-token loss, 32 role-play conversations" if method == "sft"
        else "greedy accuracy, 30 arithmetic problems",
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=["sft", "grpo"], required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's (SFT 2e-4, QLoRA GRPO 2e-5)")
    p.add_argument("--variants", default="fp32,bf16")
    p.add_argument("--out", type=Path, default=Path("/tmp/tifa_adapter_dtype"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = run_variant(args.method, args.child, args.steps, args.lr, args.out / f"{args.method}_{args.child}")
        print("RESULT " + json.dumps(result))
        return
    results = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--method", args.method, "--steps", str(args.steps), "--out", str(args.out),
               "--child", variant] + (["--lr", str(args.lr)] if args.lr else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"command": "python " + " ".join(sys.argv), "results": results}, indent=1))


if __name__ == "__main__":
    main()

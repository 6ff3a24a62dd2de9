"""Full-parameter training in bf16 on the CPU, rehearsing an A10 (``TIFA_LITE_REHEARSE=a10``):
pure bf16 weights (what the kit did before the run plan) against fp32 master weights under
bf16 autocast (the plan's rule, :mod:`tifa_lite.runplan.numerics`). Each variant in its own
process, so peak RSS is its own.

    OMP_NUM_THREADS=2 python benchmarks/full_param_precision.py --steps 6

Role-play SFT on the shipped sample with the embedded SmolLM2-135M, full-parameter, at the
R1 reproduction recipe's learning rate (5e-6, constant, no warmup). Per variant: the share of
weights that never moved, the held-out assistant-token loss before and after (role-play
conversations, 8 of them, 256 tokens), the training loss, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HELDOUT = REPO / "data" / "roleplay_sheldon_heldout.jsonl"


def run_variant(weights: str, steps: int, lr: float, out: Path) -> dict:
    import dataclasses

    import torch

    from tifa_lite.config import load_recipe
    from tifa_lite.evaluation.roleplay import perplexity, read_conversations
    from tifa_lite.methods import get_method
    from tifa_lite.methods.common import Run
    from tifa_lite.modeling import load_for_training
    from tifa_lite.runplan import resolve_plan

    os.environ["TIFA_LITE_REHEARSE"] = "a10"
    config = load_recipe(REPO / "recipes" / "sft_qlora_roleplay.yaml", {
        "model.name_or_path": "smollm2-135m-instruct", "quant.bits": None, "lora.enabled": False,
        "train.output_dir": str(out), "train.max_steps": steps, "train.per_device_batch_size": 2,
        "train.gradient_accumulation_steps": 1, "train.global_batch_size": None, "train.learning_rate": lr,
        "train.lr_scheduler": "constant", "train.warmup_ratio": 0.0, "train.logging_steps": 1,
        "train.save_steps": 10_000, "train.gradient_checkpointing": False, "train.progress_bar": False,
        "train.seed": 0, "data.max_length": 256, "data.eval_ratio": 0.0, "data.overlength": "truncate",
    })
    plan = resolve_plan(config)
    assert plan.numerics.weight_dtype == "fp32" and plan.numerics.autocast == "bf16"
    if weights == "bf16":  # the variant the plan replaced
        plan = dataclasses.replace(plan, numerics=dataclasses.replace(plan.numerics, weight_dtype="bf16"))
    model, tokenizer, peft_config = load_for_training(config, plan)
    run = Run(config=config, work_dir=out, model=model, tokenizer=tokenizer, peft_config=peft_config, plan=plan)
    trainer = get_method("sft").build_trainer(run)
    conversations = read_conversations(HELDOUT, limit=8)

    def heldout() -> float:
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = perplexity(model, tokenizer, conversations, max_length=256).nll
        model.train()
        return value

    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = heldout()
    trainer.train()
    after = heldout()
    unchanged = sum(int((p.detach() == initial[n]).sum()) for n, p in model.named_parameters())
    total = sum(p.numel() for p in model.parameters())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "weights": weights, "autocast": "bf16", "steps": trainer.state.global_step, "learning_rate": lr,
        "param_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()}),
        "unchanged_share": round(unchanged / total, 4),
        "train_loss_first": round(losses[0], 4), "train_loss_last": round(losses[-1], 4),
        "heldout_before": round(before, 4), "heldout_after": round(after, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--lr", type=float, default=5e-6)
    p.add_argument("--out", type=Path, default=Path("/tmp/tifa_full_param_precision"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_variant(args.child, args.steps, args.lr, args.out / args.child)))
        return
    results = []
    for weights in ("bf16", "fp32"):
        proc = subprocess.run([sys.executable, __file__, "--child", weights, "--steps", str(args.steps),
                               "--lr", str(args.lr), "--out", str(args.out)], capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"variant {weights} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[7:]))
        print(json.dumps(results[-1]))
    bf16, fp32 = results
    print(f"unchanged weights: bf16 {bf16['unchanged_share']:.1%}, fp32 master {fp32['unchanged_share']:.1%}; "
          f"held-out loss change: bf16 {bf16['heldout_after'] - bf16['heldout_before']:+.4f}, "
          f"fp32 master {fp32['heldout_after'] - fp32['heldout_before']:+.4f}; "
          f"peak RSS fp32/bf16 {fp32['peak_rss_mib'] / bf16['peak_rss_mib']:.2f}x")


if __name__ == "__main__":
    main()

"""Validate the memory planner.

1. CPU: predicted vs measured peak RSS of SFT on the embedded SmolLM2-135M with LoRA,
   QLoRA and full fine-tuning at two sequence lengths. Each case is a real training run
   (benchmarks/_planner_measure.py, the project's own load + TRL SFTTrainer path) in a
   fresh subprocess; its ru_maxrss is the measured peak.
2. GPU: predicted vs published figures (LLaMA-Factory, torchtune, TRL's T4 notebook),
   with the settings each publication used.

    python benchmarks/planner_validation.py                 # measure + compare (slow: real training runs)
    python benchmarks/planner_validation.py --reuse FILE    # compare against measurements saved by an earlier run
    python benchmarks/planner_validation.py --gpu-only      # published figures only (seconds)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
CPU_CASES = [
    dict(name=f"{kind} seq{seq}", bits=bits, lora=lora, batch=2, checkpointing=False, steps=2, seq_len=seq)
    for seq in (128, 512)
    for kind, bits, lora in (("QLoRA", 4, True), ("LoRA", None, True), ("full", None, False))
] + [
    # Held out: measured only after the model above was settled (different batch, length, checkpointing).
    dict(name="held-out QLoRA seq1024 ckpt", bits=4, lora=True, batch=1, checkpointing=True, steps=2, seq_len=1024),
    dict(name="held-out full seq256 batch4 ckpt", bits=None, lora=False, batch=4, checkpointing=True, steps=2,
         seq_len=256),
]


def measure(case: dict) -> dict:
    spec = {k: v for k, v in case.items() if k != "name"} | {"data_file": str(DATA)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "_planner_measure.py"), json.dumps(spec)],
        capture_output=True, text=True, cwd=ROOT,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{case['name']} failed:\n{proc.stderr[-3000:]}")
    return {"name": case["name"], **json.loads(lines[-1][len("RESULT "):])}


def cpu_prediction(m: dict):
    from tifa_lite.modeling.embedded import embedded_checkpoint
    from tifa_lite.planner import PlanInput, estimate, model_shape_from_config_dict

    cfg = json.loads((embedded_checkpoint("smollm2-135m-instruct") / "config.json").read_text())
    shape = model_shape_from_config_dict(cfg, name="smollm2-135m-instruct")
    plan_in = PlanInput(
        shape=shape, device="cpu", precision="fp32", quant_bits=m["bits"], lora=m["lora"], lora_r=m.get("r", 16),
        lora_dropout=0.05, batch=m["batch"], seq_len=m["seq_len"], gradient_checkpointing=m["checkpointing"],
        optimizer="adamw", logits="trl_chunked",
    )
    return estimate(plan_in)


def cpu_table(measured: list[dict]) -> list[str]:
    lines = [
        "| case | predicted peak RSS (GiB) | measured ru_maxrss (GiB) | error | measured baseline after imports (GiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in measured:
        plan = cpu_prediction(m)
        err = plan.peak_gib / m["peak_rss_gib"] - 1
        lines.append(
            f"| {m['name']} (batch {m['batch']}, {m['steps']} steps) | {plan.peak_gib:.2f} | {m['peak_rss_gib']:.2f} "
            f"| {err:+.1%} | {m['baseline_rss_gib']:.2f} |"
        )
    return lines


def probe_head() -> list[str]:
    """Peak RSS of TRL's chunked LM head alone on the CPU (forward + backward), the source of
    TRL_CPU_TILE_BYTES / TRL_CPU_FIXED_GIB in tifa_lite/planner/memory.py."""
    code = r"""
import sys, threading, time, psutil, torch
from trl.kernels import ChunkedLogProbFunction
n, v, h = map(int, sys.argv[1:4]); proc = psutil.Process(); peak = [0]; stop = [False]
def sample():
    while not stop[0]:
        peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.002)
w = torch.randn(v, h) * 0.02; x = torch.randn(n, h, requires_grad=True); t = torch.randint(0, v, (n,))
base = proc.memory_info().rss; threading.Thread(target=sample, daemon=True).start(); time.sleep(0.05)
out = ChunkedLogProbFunction.apply(x, w, None, t, 1.0, 32768, None, 1.0, ("log_probs", "entropy", "is_top1"))
(-out[0].sum()).backward(); time.sleep(0.05); stop[0] = True
print((peak[0] - base) / 2**30)
"""
    rows = []
    for n, v, h in ((254, 49152, 576), (1022, 49152, 576), (2044, 49152, 576), (254, 98304, 576), (254, 49152, 2048)):
        out = subprocess.run([sys.executable, "-c", code, str(n), str(v), str(h)], capture_output=True, text=True)
        gib = float(out.stdout.strip().splitlines()[-1])
        rows.append((n, v, h, gib))
    (n1, _, _, g1), (n2, _, _, g2) = rows[1], rows[2]
    per_token = (g2 - g1) * 2**30 / (n2 - n1)
    fixed = g1 - n1 * per_token / 2**30
    lines = ["| tokens | vocab | hidden | peak RSS delta (GiB) |", "|---:|---:|---:|---:|"]
    lines += [f"| {n} | {v} | {h} | {g:.3f} |" for n, v, h, g in rows]
    lines.append(f"slope {per_token / 32768:.1f} bytes per tile element (tile = tokens x 32768), fixed {fixed:.2f} GiB")
    return lines


def published_cases():
    """Each published figure with the settings its source used (see benchmarks/results/planner.md)."""
    from tifa_lite.planner import PlanInput, known_shape

    llama2_7b = known_shape("meta-llama/Llama-2-7b-hf")
    llama31_8b = known_shape("meta-llama/Llama-3.1-8B-Instruct")
    qwen2_7b = known_shape("Qwen/Qwen2-7B-Instruct")
    return [
        # LLaMA-Factory README "Hardware Requirement" (7B, 16-bit LoRA / 4-bit QLoRA): a rule-of-thumb table;
        # assumed: batch 1, cutoff_len 1024, LoRA r=8 on all linear (LLaMA-Factory example defaults), bf16, AdamW fp32
        # states, gradient checkpointing on — LLaMA-Factory's default —, full logits in HF's loss).
        ("LLaMA-Factory 7B QLoRA 4-bit", "GB", 6.0, "card", PlanInput(
            shape=llama2_7b, device="cuda", precision="bf16", quant_bits=4, lora=True, lora_r=8, lora_dropout=0.0,
            batch=1, seq_len=1024, gradient_checkpointing=True, optimizer="adamw", logits="full")),
        ("LLaMA-Factory 7B LoRA 16-bit", "GB", 16.0, "card", PlanInput(
            shape=llama2_7b, device="cuda", precision="bf16", quant_bits=None, lora=True, lora_r=8,
            lora_dropout=0.0, batch=1, seq_len=1024, gradient_checkpointing=True, optimizer="adamw", logits="full")),
        # torchtune README, Llama 3.1 8B on one RTX 4090, batch 2, packed to 2048, torch.compile on.
        # LoRA/QLoRA configs: rank 8 on q,v,output_proj (+k for QLoRA) + MLP, AdamW (fp32 states), checkpointing,
        # CEWithChunkedOutputLoss (8 chunks upcast one at a time).
        ("torchtune Llama-3.1-8B QLoRA (4090)", "GiB", 7.4, "allocator", PlanInput(
            shape=llama31_8b, device="cuda", precision="bf16", quant_bits=4, lora=True, lora_r=8, lora_dropout=0.0,
            lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            batch=2, seq_len=2048, gradient_checkpointing=True, optimizer="adamw", logits="chunked8")),
        ("torchtune Llama-3.1-8B LoRA (4090)", "GiB", 16.2, "allocator", PlanInput(
            shape=llama31_8b, device="cuda", precision="bf16", quant_bits=None, lora=True, lora_r=8,
            lora_dropout=0.0, lora_targets=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            batch=2, seq_len=2048, gradient_checkpointing=True, optimizer="adamw", logits="chunked8")),
        # Full: bf16 weights, bitsandbytes PagedAdamW8bit with optimizer_in_bwd=True (each gradient is applied and
        # freed inside backward), activation checkpointing. Paged optimizer states live in CUDA unified memory,
        # which torch.cuda.max_memory_allocated() (what torchtune logs) does not count.
        ("torchtune Llama-3.1-8B full (4090)", "GiB", 18.9, "allocator", PlanInput(
            shape=llama31_8b, device="cuda", precision="bf16", quant_bits=None, lora=False,
            batch=2, seq_len=2048, gradient_checkpointing=True, optimizer="paged_adamw_8bit",
            optimizer_in_backward=True, logits="chunked8")),
        # TRL notebook grpo_trl_lora_qlora.ipynb: Qwen2-7B-Instruct, NF4 + double quant, dtype=float32 for the
        # unquantised parts, compute fp16, LoRA r=32 on all linear, per_device_train_batch_size=8,
        # num_generations=8, max_completion_length=256, paged_adamw_8bit, Liger kernel (fused GRPO loss),
        # gradient checkpointing, HF generate (no vLLM), beta=0 (no reference model, TRL's default).
        # The 8 rows of a micro-batch are the 8 generations of ONE prompt: assumed ~200 prompt tokens (the
        # notebook's ~75-token system prompt + a NuminaMath problem + chat template) + 256 completion tokens.
        # dtype=float32 keeps the unquantised weights and the residual stream (activations) in fp32.
        ("TRL T4 notebook Qwen2-7B QLoRA GRPO", "GiB", 9.2, "allocator", PlanInput(
            shape=qwen2_7b, device="cuda", precision="fp32", param_dtype="fp32", quant_bits=4, lora=True,
            lora_r=32, lora_dropout=0.0, batch=8, seq_len=200 + 256, gradient_checkpointing=True,
            optimizer="paged_adamw_8bit", logits="trl_chunked", method="grpo", num_generations=8,
            max_prompt_length=200, max_completion_length=256, use_vllm=False)),
    ]


def gpu_table() -> list[str]:
    """``card`` figures are what a card must hold (our peak incl. the CUDA context); ``allocator``
    figures were read from torch's allocator, which does not see the context (our allocator_peak)."""
    from tifa_lite.planner import estimate

    lines = ["| published figure | published | predicted | error | compared with |", "|---|---:|---:|---:|---|"]
    for name, unit, value, basis, plan_in in published_cases():
        plan = estimate(plan_in)
        gib = plan.peak_gib if basis == "card" else plan.allocator_peak_gib
        predicted = gib if unit == "GiB" else gib * 2**30 / 1e9
        what = "peak incl. CUDA context" if basis == "card" else "torch allocator peak (no CUDA context)"
        lines.append(f"| {name} | {value} {unit} | {predicted:.1f} {unit} | {predicted / value - 1:+.1%} | {what} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reuse", nargs="+", help="JSON files of measurements saved by earlier runs")
    ap.add_argument("--save", default=str(ROOT / "benchmarks" / "results" / "planner_cpu_measured.json"))
    ap.add_argument("--gpu-only", action="store_true")
    ap.add_argument("--only", help="measure only the cases whose name contains this")
    ap.add_argument("--measure-only", action="store_true", help="run and save the CPU measurements, compare later")
    ap.add_argument("--probe-head", action="store_true", help="measure TRL's chunked LM head alone on the CPU")
    args = ap.parse_args(argv)
    if args.probe_head:
        print("\n".join(probe_head()))
        return 0

    if not args.measure_only:
        print("\n".join(gpu_table()))
    if args.gpu_only:
        return 0
    if args.reuse:
        measured = [m for f in args.reuse for m in json.loads(Path(f).read_text())]
    else:
        measured = []
        for case in CPU_CASES:
            if args.only and args.only not in case["name"]:
                continue
            measured.append(measure(case))
            print(json.dumps(measured[-1]), flush=True)
        Path(args.save).write_text(json.dumps(measured, indent=1))
    if args.measure_only:
        return 0
    print()
    print("\n".join(cpu_table(measured)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

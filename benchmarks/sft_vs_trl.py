"""SFT throughput and peak RSS: tifa_lite vs a plain TRL SFTTrainer script, same model
(embedded SmolLM2-135M-Instruct), same data (GSM8K rows as chat), same QLoRA/LoRA and
batch settings, one epoch each, measured side by side in one run.

    python benchmarks/sft_vs_trl.py --rows 96 --batch 8 --max-length 512

Every variant runs in its own subprocess (clean peak RSS); tokens/s counts the real
(non-padding) tokens of the epoch divided by the trainer's own train_runtime.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def make_data(rows: int, out: Path) -> Path:
    source = GSM8K if GSM8K.is_file() else REPO / "data" / "gsm8k_sample.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines()[:rows]
    with out.open("w", encoding="utf-8") as fh:
        for line in lines:
            row = json.loads(line)
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": row["question"]},
                {"role": "assistant", "content": row["answer"]},
            ]}) + "\n")
    return out


def run_ours(args, data: Path, out: Path, packing: bool) -> dict:
    from tifa_lite import train

    result = train({}, **{
        "model.name_or_path": "smollm2-135m-instruct",
        "quant.bits": 4 if args.qlora else None,
        "lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.0,
        "data.path": str(data), "data.format": "messages", "data.max_length": args.max_length,
        "data.shuffle": False,
        "train.output_dir": str(out), "train.num_epochs": 1, "train.max_steps": -1,
        "train.per_device_batch_size": args.batch, "train.gradient_accumulation_steps": 1,
        "train.learning_rate": 2e-4, "train.packing": packing, "train.save_steps": 10_000,
        # TRL's SFTConfig checkpoints activations by default; compare like with like.
        "train.gradient_checkpointing": True, "train.warmup_ratio": 0.0, "train.global_batch_size": None,
        "train.logging_steps": 1000, "train.progress_bar": False, "train.resume": "never",
    })
    report = json.loads((result.output_dir / "data_report.json").read_text())
    return {"tokens": report["train_tokens"], "runtime": result.metrics["train_runtime"], "steps": result.global_step}


def run_trl(args, data: Path, out: Path, packing: bool) -> dict:
    """The plain script a TRL user writes: load, LoraConfig, SFTConfig, SFTTrainer."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from tifa_lite.modeling.embedded import embedded_checkpoint

    path = embedded_checkpoint("smollm2-135m-instruct")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa",
                                                 quantization_config=quant if args.qlora else None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset = load_dataset("json", data_files=str(data), split="train")
    config = SFTConfig(
        output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, learning_rate=2e-4, max_length=args.max_length, packing=packing,
        logging_steps=1000, save_strategy="no", report_to="none", disable_tqdm=True, seed=42, bf16=False,
        gradient_checkpointing=True,  # TRL's default, stated so the comparison is explicit
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    # Packed rows hold several samples (and bfd truncates overflow): count the real tokens in them.
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    metrics = trainer.train().metrics
    return {"tokens": tokens, "runtime": metrics["train_runtime"], "steps": trainer.state.global_step}


VARIANTS = {"ours": (run_ours, False), "ours_packing": (run_ours, True), "trl": (run_trl, False),
            "trl_packing": (run_trl, True)}


def child(args) -> None:
    fn, packing = VARIANTS[args.child]
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(args.rows, Path(tmp) / "data.jsonl")
        result = fn(args, data, Path(tmp) / "out", packing)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lora", dest="qlora", action="store_false", help="plain LoRA instead of QLoRA")
    parser.add_argument("--variants", default="trl,ours,trl_packing,ours_packing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    results = {}
    for name in args.variants.split(","):
        cmd = [sys.executable, __file__, "--child", name, "--rows", str(args.rows), "--batch", str(args.batch),
               "--max-length", str(args.max_length)] + ([] if args.qlora else ["--lora"])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(line[7:])
        r["tok_per_s"] = r["tokens"] / r["runtime"]
        results[name] = r
        print(f"{name:13s} steps={r['steps']:3d} tokens={r['tokens']:6d} runtime={r['runtime']:7.1f}s "
              f"tok/s={r['tok_per_s']:6.1f} peak_rss={r['peak_rss_mib']:7.0f} MiB", flush=True)

    base = results.get("trl")
    if base:
        print(f"\nratios vs plain TRL ({'QLoRA' if args.qlora else 'LoRA'}, {args.rows} rows, bs {args.batch}, "
              f"max_len {args.max_length}):")
        for name, r in results.items():
            print(f"  {name:13s} throughput {r['tok_per_s'] / base['tok_per_s']:.2f}x   "
                  f"peak RSS {r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x")


if __name__ == "__main__":
    main()

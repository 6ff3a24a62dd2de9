"""SFT throughput and peak RSS: tifa_lite vs the plain TRL SFTTrainer script a TRL user writes.

Same model (embedded SmolLM2-135M-Instruct), same conversations, LoRA r16 / alpha 32 on all
linear layers, batch 8, one epoch, fp32 on the CPU, measured side by side in one command:

    python benchmarks/sft_vs_trl.py --data gsm8k --rows 96 --lora --checkpointing on --repeats 2

Honest by construction:

- Loss domain. A variant is ``<side>-<domain>``: ``all`` trains on every token (plain TRL's
  default on a ``messages`` data set; ours with ``train.assistant_only_loss=false``),
  ``assistant`` on the assistant's tokens only (our default; plain TRL given the same
  conversations as prompt/completion, its documented way to mask the prompt, because TRL
  cannot add ``{% generation %}`` markers to SmolLM2's template). Compare within a domain.
- Tokens are counted from the batches each trainer's own collator builds (see
  ``_sft_probe.py``): real tokens, padded tokens and loss tokens; tokens/s = real tokens /
  the trainer's ``train_runtime``. Two sides whose real or loss tokens differ are not compared.
  ``step_cpu`` is the process CPU time of the training steps (all threads), a second view
  that other jobs on the machine disturb less than wall time.
- ``--checkpointing on|off`` applies to both sides; each run reports the model's
  ``is_gradient_checkpointing`` flag and the forward calls of the first decoder layer's MLP
  per step (2 = the forward is recomputed in the backward).
- ``--repeats N`` runs the variant list N times in alternating order (A B, B A, …); every
  run is its own subprocess (clean peak RSS), every run is printed, and medians are taken
  per variant.
- Date, commit and library versions are printed first.

``--data mixed`` is a 400-row set whose lengths vary: the first 200 GSM8K rows and the
first 200 role-play conversations of ``data/roleplay_sheldon_sample.jsonl`` (long system
prompt, short replies), interleaved with a fixed seed.

``--profile-step K --profile-dir D`` runs step K of every variant under torch.profiler and
writes the op table; ``--diff A.json B.json`` prints two profiled steps side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The checkout this script is in, not whichever tifa_lite is installed: an older commit's
# benchmark measures that commit's code.
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
ROLEPLAY = REPO / "data" / "roleplay_sheldon_sample.jsonl"
SIDES, DOMAINS = ("trl", "ours"), ("all", "assistant")


def parse_variant(name: str) -> tuple[str, str, bool]:
    parts = name.split("-")
    packed = parts[-1] == "packed"
    if packed:
        parts = parts[:-1]
    if len(parts) != 2 or parts[0] not in SIDES or parts[1] not in DOMAINS:
        sys.exit(f"--variants: {name!r} is not <trl|ours>-<all|assistant>[-packed]")
    return parts[0], parts[1], packed


def conversations(kind: str, rows: int) -> list[list[dict]]:
    if not GSM8K.is_file():
        sys.exit(f"{GSM8K} is missing: the benchmark reads GSM8K from the shared data beside the checkout")
    gsm_rows = rows if kind == "gsm8k" else rows // 2
    with GSM8K.open(encoding="utf-8") as fh:
        gsm = [json.loads(line) for _, line in zip(range(gsm_rows), fh)]
    convs = [[{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}] for r in gsm]
    if kind == "mixed":
        with ROLEPLAY.open(encoding="utf-8") as fh:
            convs += [json.loads(line)["messages"] for _, line in zip(range(rows - gsm_rows), fh)]
        random.Random(0).shuffle(convs)
    return convs


def write_data(convs: list[list[dict]], out: Path, prompt_completion: bool) -> Path:
    """messages rows, or the same conversations split before the final assistant turn."""
    with out.open("w", encoding="utf-8") as fh:
        for messages in convs:
            if prompt_completion:
                if messages[-1]["role"] != "assistant" or any(m["role"] == "assistant" for m in messages[:-1]):
                    sys.exit("prompt/completion form needs one assistant turn, at the end")
                row = {"prompt": messages[:-1], "completion": messages[-1:]}
            else:
                row = {"messages": messages}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out


def run_ours(args, data: Path, out: Path, domain: str, packed: bool) -> dict:
    from tifa_lite import train

    result = train({}, **{
        "model.name_or_path": "smollm2-135m-instruct",
        "quant.bits": 4 if args.qlora else None,
        "lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.0,
        "data.path": str(data), "data.format": "messages", "data.max_length": args.max_length,
        "data.shuffle": False,
        "train.output_dir": str(out), "train.num_epochs": 1, "train.max_steps": args.max_steps,
        "train.per_device_batch_size": args.batch, "train.gradient_accumulation_steps": 1,
        "train.learning_rate": 2e-4, "train.packing": packed, "train.save_steps": 10_000,
        "train.assistant_only_loss": domain == "assistant",
        "train.gradient_checkpointing": args.checkpointing == "on",
        "train.warmup_ratio": 0.0, "train.global_batch_size": None,
        "train.logging_steps": 1000, "train.progress_bar": False, "train.resume": "never",
    })
    return {"runtime": result.metrics["train_runtime"], "steps": result.global_step}


def run_trl(args, data: Path, out: Path, domain: str, packed: bool) -> dict:
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
        output_dir=str(out), num_train_epochs=1, max_steps=args.max_steps, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, learning_rate=2e-4, max_length=args.max_length, packing=packed,
        logging_steps=1000, save_strategy="no", report_to="none", disable_tqdm=True, seed=42, bf16=False,
        # TRL's default is on; stated either way so the comparison is explicit.
        gradient_checkpointing=args.checkpointing == "on",
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    metrics = trainer.train().metrics
    return {"runtime": metrics["train_runtime"], "steps": trainer.state.global_step}


def child(args) -> None:
    import _sft_probe

    side, domain, packed = parse_variant(args.child)
    profile_out = Path(args.profile_dir) / f"{args.child}-run{args.run_index}" if args.profile_dir else None
    ledger = _sft_probe.install(args.profile_step, profile_out, batches_only=args.batches_only)
    with tempfile.TemporaryDirectory() as tmp:
        # Plain TRL masks the prompt only for prompt/completion rows; ours reads messages and masks by itself.
        data = write_data(conversations(args.data, args.rows), Path(tmp) / "data.jsonl",
                          prompt_completion=side == "trl" and domain == "assistant")
        result = (run_trl if side == "trl" else run_ours)(args, data, Path(tmp) / "out", domain, packed)
    result.update(ledger.totals())
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def provenance() -> list[str]:
    import importlib.metadata as md

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True).stdout.strip()

    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    versions = ", ".join(f"{p} {md.version(p)}" for p in
                         ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets"))
    return [f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"commit: {git('rev-parse', '--short', 'HEAD')}{dirty}",
            f"python {sys.version.split()[0]}, {versions}",
            f"cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
            f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}"]


def run_order(variants: list[str], repeats: int) -> list[str]:
    """A B C, C B A, A B C …: every variant runs early and late equally often."""
    return [v for i in range(repeats) for v in (variants if i % 2 == 0 else variants[::-1])]


def summarize(runs: list[tuple[str, dict]], args) -> None:
    by_variant: dict[str, list[dict]] = {}
    for name, r in runs:
        by_variant.setdefault(name, []).append(r)
    med = {name: {key: statistics.median(r[key] for r in rs) for key in ("tok_per_s", "peak_rss_mib")}
           for name, rs in by_variant.items()}
    print(f"\nmedians over {args.repeats} run(s) per variant ({'QLoRA' if args.qlora else 'LoRA'}, {args.data} "
          f"{args.rows} rows, bs {args.batch}, max_len {args.max_length}, checkpointing {args.checkpointing}):")
    for name, m in med.items():
        print(f"  {name:24s} tok/s {m['tok_per_s']:7.1f}   peak RSS {m['peak_rss_mib']:6.0f} MiB")
    print("\nratios within a loss domain (ours / plain TRL, medians; 'all' = loss on every token, plain TRL's default on "
          "messages; 'assistant' = loss on the assistant's tokens only, ours' default):")
    for domain in DOMAINS:
        for suffix in ("", "-packed"):
            for base_suffix in ("", "-packed"):
                trl, ours = f"trl-{domain}{base_suffix}", f"ours-{domain}{suffix}"
                if trl not in med or ours not in med:
                    continue
                counts = {(by_variant[n][0]["tokens_real"], by_variant[n][0]["tokens_loss"]) for n in (trl, ours)}
                if len(counts) != 1:
                    print(f"  {ours} vs {trl}: different (real, loss) tokens {sorted(counts)}, not comparable")
                    continue
                print(f"  {ours:24s} vs {trl:20s} throughput {med[ours]['tok_per_s'] / med[trl]['tok_per_s']:.2f}x"
                      f"   peak RSS {med[ours]['peak_rss_mib'] / med[trl]['peak_rss_mib']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("gsm8k", "mixed"), default="gsm8k")
    parser.add_argument("--rows", type=int, help="default: 96 for gsm8k, 400 for mixed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop early (profiling); -1 = one epoch")
    parser.add_argument("--lora", dest="qlora", action="store_false", help="plain LoRA instead of QLoRA")
    parser.add_argument("--checkpointing", choices=("on", "off"), default="on")
    parser.add_argument("--variants", default="trl-all,ours-all,trl-assistant,ours-assistant")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches-only", action="store_true",
                        help="build and count every batch of the epoch without computing (padding account)")
    parser.add_argument("--profile-step", type=int)
    parser.add_argument("--profile-dir")
    parser.add_argument("--json-out", help="write every run's full record here")
    parser.add_argument("--diff", nargs=2, metavar=("A_JSON", "B_JSON"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--run-index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rows = args.rows or (96 if args.data == "gsm8k" else 400)
    if args.diff:
        import _sft_probe

        return print(_sft_probe.diff_profiles(*args.diff))
    if args.child:
        return child(args)

    variants = args.variants.split(",")
    for name in variants:
        parse_variant(name)
    print("\n".join(provenance()), flush=True)
    forwarded = ["--data", args.data, "--rows", str(args.rows), "--batch", str(args.batch),
                 "--max-length", str(args.max_length), "--max-steps", str(args.max_steps),
                 "--checkpointing", args.checkpointing, *([] if args.qlora else ["--lora"]),
                 *(["--batches-only"] if args.batches_only else [])]
    if args.profile_step is not None:
        forwarded += ["--profile-step", str(args.profile_step), "--profile-dir", args.profile_dir or "profiles"]
    runs: list[tuple[str, dict]] = []
    for index, name in enumerate(run_order(variants, args.repeats)):
        cmd = [sys.executable, __file__, *forwarded, "--child", name, "--run-index", str(index)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{name} failed (exit status {proc.returncode}; -9 is a kill, e.g. out of memory):\n"
                     f"{proc.stderr[-3000:]}")
        r = json.loads(line[7:])
        r["tok_per_s"] = r["tokens_real"] / r["runtime"]
        runs.append((name, r))
        print(f"run {index}: {name:24s} steps={r['steps']:3d} real={r['tokens_real']:6d} padded={r['tokens_padded']:6d} "
              f"loss_tokens={r['tokens_loss']:6d} runtime={r['runtime']:7.1f}s tok/s={r['tok_per_s']:6.1f} "
              f"step_cpu={sum(r['step_cpu_seconds']):7.1f}s peak_rss={r['peak_rss_mib']:6.0f} MiB "
              f"checkpointing={r['is_gradient_checkpointing']} "
              f"layer_forwards/step={sorted(set(r['layer_forwards_per_step']))} sampler={r['sampler']} "
              f"collator={r['collator']} train_loss={r['train_loss']:.4f}", flush=True)
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([{"variant": n, **r} for n, r in runs], indent=1))
    (summarize_batches if args.batches_only else summarize)(runs, args)


def summarize_batches(runs: list[tuple[str, dict]], args) -> None:
    print(f"\nbatches only (no compute), {args.data} {args.rows} rows, bs {args.batch}, max_len {args.max_length}:")
    for name, r in dict(runs).items():
        print(f"  {name:24s} batches {r['batches']:3d}  real {r['tokens_real']:7d}  padded {r['tokens_padded']:7d} "
              f"({1 - r['tokens_real'] / r['tokens_padded']:5.1%} padding)  loss tokens {r['tokens_loss']:7d}  "
              f"attention pairs {r['attention_pairs'] / 1e6:7.1f} M")


if __name__ == "__main__":
    main()

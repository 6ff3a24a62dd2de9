"""Peak RSS of a LoRA merge relative to model size: tifa_lite's streamed merge vs the
plain PEFT script (load base, PeftModel.from_pretrained, merge_and_unload,
save_pretrained), measured side by side in one run, each in a fresh child process.

    python benchmarks/merge_rss.py [--layers 12] [--hidden 1024] [--shard 200MB]

A random Llama (fp32 safetensors, sharded like a hub checkpoint) and a random-but-
non-zero LoRA adapter (r=16, all-linear) are built in a temp folder; both merges write
bf16. "Extra RSS" is the child's peak RSS minus its RSS right after importing torch,
transformers and peft, i.e. what the merge itself costs.
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


def rss_now(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class AnonPeak:
    """Peak anonymous RSS, sampled every 20 ms. ru_maxrss also counts file pages of the
    memory-mapped safetensors, which the kernel can drop under pressure; anonymous
    memory is what runs a Colab out of RAM."""

    def __init__(self):
        import threading

        self.peak = rss_now("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_now("RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_now("RssAnon"))


def child(mode: str, base: str, adapter: str, out: str, shard: str) -> None:
    import torch  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401

    import tifa_lite.merging  # noqa: F401

    baseline = rss_now()
    anon_baseline = rss_now("RssAnon")
    sampler = AnonPeak()
    started = time.time()
    if mode == "peft":
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        merged.to(torch.bfloat16).save_pretrained(out, max_shard_size=shard)
    else:
        from tifa_lite.merging import merge

        merge(adapter, out, dtype="bf16", base=base, max_shard_size=shard, check=mode == "tifa+check")
    seconds = time.time() - started
    anon_peak = sampler.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "baseline": baseline, "peak": peak, "anon_baseline": anon_baseline,
                      "anon_peak": anon_peak, "seconds": seconds}))


def build(folder: Path, layers: int, hidden: int, shard: str) -> tuple[Path, Path, int]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from transformers import AutoTokenizer

    from tifa_lite.modeling.embedded import embedded_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint("smollm2-135m-instruct"))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    base = folder / "base"
    model.save_pretrained(base, max_shard_size=shard)
    tokenizer.save_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.01)
    adapter = folder / "adapter"
    peft_model.save_pretrained(adapter)
    size = sum(p.numel() for p in model.parameters()) * 4
    return base, adapter, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--shard", default="100MB")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "BASE", "ADAPTER", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.shard)
        return

    with tempfile.TemporaryDirectory(prefix="merge_rss_") as tmp:
        tmp = Path(tmp)
        base, adapter, fp32_bytes = build(tmp, args.layers, args.hidden, args.shard)
        rows = []
        for mode in ("peft", "tifa", "tifa+check"):
            out = tmp / f"out-{mode}"
            cmd = [sys.executable, __file__, "--shard", args.shard, "--child", mode, str(base), str(adapter), str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            if proc.returncode != 0:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    gib = 2**30
    print(f"model: {args.layers} layers, hidden {args.hidden}: {fp32_bytes / gib:.2f} GiB fp32 on disk "
          f"({fp32_bytes / 2 / gib:.2f} GiB as bf16), shards of {args.shard}")
    print("| merge | peak RSS (GiB) | extra RSS / fp32 model | extra anon RSS (GiB) | extra anon / fp32 model | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        extra = r["peak"] - r["baseline"]
        anon = r["anon_peak"] - r["anon_baseline"]
        print(f"| {r['mode']} | {r['peak'] / gib:.2f} | {extra / fp32_bytes:.2f} | {anon / gib:.2f} | "
              f"{anon / fp32_bytes:.2f} | {r['seconds']:.0f} |")
    ours = next(r for r in rows if r["mode"] == "tifa")
    plain = next(r for r in rows if r["mode"] == "peft")
    ratio = (ours["anon_peak"] - ours["anon_baseline"]) / (plain["anon_peak"] - plain["anon_baseline"])
    print(f"extra anonymous RSS, streamed merge vs plain PEFT merge: {ratio:.2f}x")


if __name__ == "__main__":
    main()

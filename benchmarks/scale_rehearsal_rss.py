"""Host RAM of each rank right after loading the model under the ZeRO-3 scale profile,
before and after the DeepSpeed config is made live before ``from_pretrained`` (issue 14),
on the CPU rehearsal: one torchrun with 2 ranks, gloo, DeepSpeed's CPU accelerator, fp32.

    python benchmarks/scale_rehearsal_rss.py [--modes before,after] [--layers 24] [--hidden 896]

The model is a random Qwen2 of Qwen2.5-0.5B's shape (hidden 896, 24 layers, intermediate
4864, 14/2 heads, vocab 151936, tied embeddings: 494 M parameters, 1.98 GB in fp32),
written once as fp32 safetensors into a temp folder. Each rank runs the project's own load
path, the calls ``tifa_lite.runner.run_config`` makes: ``prepare_distributed`` →
``early_training_arguments`` → ``load_for_training_with_backend``. "before" leaves out
``early_training_arguments``, which is the load path as it was before the change.

Per rank: VmRSS and RssAnon (anonymous memory, what runs a machine out of RAM; VmRSS also
counts pages of the memory-mapped safetensors the kernel can drop) right before and right
after the load, the peak RssAnon during the load (sampled every 10 ms), ru_maxrss, and how
many of the model's elements the rank holds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "sft_qlora_roleplay.yaml"
GIB = 2**30


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class AnonPeak:
    def __init__(self):
        self.peak = status_bytes("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, status_bytes("RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, status_bytes("RssAnon"))


def worker(mode: str, model_dir: str, out_dir: str) -> None:
    from tifa_lite.backends import load_for_training_with_backend
    from tifa_lite.config import load_recipe
    from tifa_lite.distributed.runtime import barrier, early_training_arguments, env_rank, prepare_distributed
    from tifa_lite.hardware import detect, resolve_precision

    config = load_recipe(RECIPE, [
        f"model.name_or_path={model_dir}", f"train.output_dir={out_dir}/run",
        "distributed.nnodes=1", "distributed.nproc_per_node=2",
    ], profile=["h100x16_zero3", "cpu_rehearsal"])
    config = prepare_distributed(config)
    hardware = detect()
    precision = resolve_precision(config.train.precision, hardware)
    barrier()
    before = {"rss": status_bytes("VmRSS"), "anon": status_bytes("RssAnon")}
    sampler = AnonPeak()
    keep = early_training_arguments(config, Path(out_dir) / "run.partial", precision) if mode == "after" else None
    model, _tokenizer, _peft = load_for_training_with_backend(config, precision, hardware)
    peak_anon = sampler.stop()
    after = {"rss": status_bytes("VmRSS"), "anon": status_bytes("RssAnon")}
    params = list(model.parameters())
    total = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
    result = {
        "mode": mode, "rank": env_rank(), "precision": precision, "elements_total": total, "elements_held": held,
        "rss_before": before["rss"], "anon_before": before["anon"], "rss_after": after["rss"],
        "anon_after": after["anon"], "peak_anon_during_load": peak_anon,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    Path(out_dir, f"{mode}_rank{env_rank()}.json").write_text(json.dumps(result))
    del keep
    barrier()


def build_model(folder: Path, layers: int, hidden: int) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from tifa_lite.modeling.embedded import embedded_checkpoint

    config = Qwen2Config(
        vocab_size=151936, hidden_size=hidden, intermediate_size=4864 * hidden // 896, num_hidden_layers=layers,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)  # fp32 safetensors
    AutoTokenizer.from_pretrained(embedded_checkpoint("smollm2-135m-instruct")).save_pretrained(folder)


def gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", default="before,after")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="scale_rss_") as tmp:
        model_dir = Path(tmp) / "model"
        build_model(model_dir, args.layers, args.hidden)
        size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
        print(f"model: {size / GIB:.2f} GiB of fp32 safetensors")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
        rows = []
        for mode in args.modes.split(","):
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                            "--master_port", "29741", __file__, "--worker", mode, "--model", str(model_dir),
                            "--out", tmp], check=True, env=env, cwd=ROOT)
            for rank in (0, 1):
                rows.append(json.loads(Path(tmp, f"{mode}_rank{rank}.json").read_text()))
    print("\n| load path | rank | elements held | RSS before → after load (GiB) | anonymous before → after (GiB) "
          "| peak anonymous during load (GiB) | ru_maxrss (GiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['rank']} | {r['elements_held'] / 1e6:.1f} M of {r['elements_total'] / 1e6:.1f} M "
              f"| {gib(r['rss_before'])} → {gib(r['rss_after'])} | {gib(r['anon_before'])} → {gib(r['anon_after'])} "
              f"| {gib(r['peak_anon_during_load'])} | {gib(r['ru_maxrss'])} |")
    print("\n" + json.dumps(rows))


if __name__ == "__main__":
    main()

"""Host RAM of each rank when the model is loaded under the ZeRO-3 scale profile, before and
after the DeepSpeed config is made live before ``from_pretrained`` (issue 14), on the CPU
rehearsal: one torchrun with 2 ranks, gloo, DeepSpeed's CPU accelerator, fp32.

    python benchmarks/scale_rehearsal_rss.py [--modes before,after] [--layers 24] [--hidden 896]
                                             [--save-dtype float32|bfloat16]

The model is a random Qwen2 of Qwen2.5-0.5B's shape (hidden 896, 24 layers, intermediate
4864, 14/2 heads, vocab 151936, tied embeddings: 494 M parameters, 1.98 GB in fp32),
written once as safetensors (fp32, or bf16 with --save-dtype) into a temp folder. Each rank runs the project's own load
path, the calls ``tifa_lite.training.runner.run_config`` makes: ``prepare_distributed`` →
``early_training_arguments`` → ``load_for_training_with_backend``. "before" leaves out
``early_training_arguments`` before the load, which is the load path as it was.

A model loaded whole is not yet resident: transformers maps the safetensors file and pages
the weights in when something reads them, which DeepSpeed does when it partitions the model
at engine start. So each rank then also starts the ZeRO-3 engine the trainer would
(``deepspeed.initialize`` on the model, with the trainer's DeepSpeed config completed by
transformers' ``trainer_config_finalize``; no optimizer, whose states are the same in both
paths and not part of loading). Memory is the proportional set size (Pss from
/proc/self/smaps_rollup: pages shared by the two ranks, like the mapped checkpoint, count
half to each), so the two ranks' figures add up to the machine's; peaks are sampled every
20 ms.
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


def pss() -> dict[str, int]:
    values = {}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Pss_Anon", "Pss_File"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class PeakPss:
    def __init__(self):
        self.peak = pss()["Pss"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, pss()["Pss"])

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, pss()["Pss"])


def trimmed_pss() -> dict[str, int]:
    """Pss once freed memory is handed back: glibc keeps freed heap blocks (the full-size
    tensors DeepSpeed gathers and drops while it loads and partitions) until malloc_trim,
    so the plain figure mixes live tensors with memory the process would reuse."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return pss()


def held_elements(model) -> tuple[int, int]:
    params = list(model.parameters())
    total = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    return sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params), total


def worker(mode: str, model_dir: str, out_dir: str) -> None:
    import deepspeed

    from tifa_lite.backends import load_for_training_with_backend
    from tifa_lite.config import load_recipe
    from tifa_lite.distributed.runtime import barrier, env_rank, prepare_distributed
    from tifa_lite.methods.common import early_training_arguments
    from tifa_lite.runplan import resolve_plan

    config = load_recipe(RECIPE, [
        f"model.name_or_path={model_dir}", f"train.output_dir={out_dir}/run",
        "distributed.nnodes=1", "distributed.nproc_per_node=2",
    ], profile=["h100x16_zero3", "cpu_rehearsal"])
    config = prepare_distributed(config)
    plan = resolve_plan(config)
    precision = plan.precision
    work_dir = Path(out_dir) / "run.partial"
    barrier()
    result = {"mode": mode, "rank": env_rank(), "precision": precision, "before_load": pss()}

    sampler = PeakPss()
    args = early_training_arguments(config, work_dir, plan) if mode == "after" else None
    model, _tokenizer, _peft = load_for_training_with_backend(config, plan)
    result["peak_pss_load"] = sampler.stop()
    result["after_load"] = pss()
    result["held_after_load"], result["elements_total"] = held_elements(model)
    result["after_load_trimmed"] = trimmed_pss()
    barrier()

    sampler = PeakPss()
    args = args or early_training_arguments(config, work_dir, precision)
    ds_config = args.hf_deepspeed_config
    ds_config.trainer_config_finalize(args, model, 1)
    engine, *_ = deepspeed.initialize(model=model, config=ds_config.config)
    result["peak_pss_engine"] = sampler.stop()
    result["after_engine"] = pss()
    result["after_engine_trimmed"] = trimmed_pss()
    result["held_after_engine"], _ = held_elements(engine.module)
    result["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(out_dir, f"{mode}_rank{env_rank()}.json").write_text(json.dumps(result))
    barrier()


def build_model(folder: Path, layers: int, hidden: int, save_dtype: str) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from tifa_lite.modeling.embedded import embedded_checkpoint

    config = Qwen2Config(
        vocab_size=151936, hidden_size=hidden, intermediate_size=4864 * hidden // 896, num_hidden_layers=layers,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(getattr(torch, save_dtype)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedded_checkpoint("smollm2-135m-instruct")).save_pretrained(folder)


def gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", default="before,after")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--save-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="dtype of the checkpoint on disk (the rehearsal loads fp32: bfloat16 files are converted)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="scale_rss_") as tmp:
        model_dir = Path(tmp) / "model"
        build_model(model_dir, args.layers, args.hidden, args.save_dtype)
        size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
        print(f"model: {size / GIB:.2f} GiB of {args.save_dtype} safetensors")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
        rows = []
        for mode in args.modes.split(","):
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                            "--master_port", "29741", __file__, "--worker", mode, "--model", str(model_dir),
                            "--out", tmp], check=True, env=env, cwd=ROOT)
            for rank in (0, 1):
                rows.append(json.loads(Path(tmp, f"{mode}_rank{rank}.json").read_text()))
    print("\n| load path | rank | elements held after load | Pss after load (GiB) | … after malloc_trim "
          "| peak Pss during load | elements held after engine start | Pss after engine start | … after malloc_trim "
          "| peak Pss during engine start | ru_maxrss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['rank']} | {r['held_after_load'] / 1e6:.0f} M of {r['elements_total'] / 1e6:.0f} M "
              f"| {gib(r['after_load']['Pss'])} | {gib(r['after_load_trimmed']['Pss'])} | {gib(r['peak_pss_load'])} "
              f"| {r['held_after_engine'] / 1e6:.0f} M | {gib(r['after_engine']['Pss'])} "
              f"| {gib(r['after_engine_trimmed']['Pss'])} | {gib(r['peak_pss_engine'])} | {gib(r['ru_maxrss'])} |")
    for mode in args.modes.split(","):
        ranks = [r for r in rows if r["mode"] == mode]
        print(f"\n{mode}: both ranks together, Pss before load {gib(sum(r['before_load']['Pss'] for r in ranks))} GiB, "
              f"after load {gib(sum(r['after_load']['Pss'] for r in ranks))} GiB, after engine start "
              f"{gib(sum(r['after_engine']['Pss'] for r in ranks))} GiB; sum of the per-rank peaks "
              f"{gib(sum(max(r['peak_pss_load'], r['peak_pss_engine']) for r in ranks))} GiB")
    print("\n" + json.dumps(rows))


if __name__ == "__main__":
    main()

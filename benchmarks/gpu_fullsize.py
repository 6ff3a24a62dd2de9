"""Full size on one GPU: 7B/8B-shaped QLoRA SFT, DPO and GRPO (and the R1 recipe's 0.5B GRPO)
under a T4's and an A10's memory, planned vs measured, beside the plain TRL script; a 7B merge
under the T4 plan; the GPU's speed levers (Liger kernels, padding-free packing with
FlashAttention-2 where it imports) as arms. Run by ``scripts/gpu_fullsize.sh`` (see its --help).

    python benchmarks/gpu_fullsize.py --list                 # the runs, in the order they go
    python benchmarks/gpu_fullsize.py --budget-s 480          # everything that fits 8 minutes
    python benchmarks/gpu_fullsize.py --runs sft-ours-t4,sft-trl-t4

Every run is its own process (its own memory cap and peak, an OOM kills only it), in priority
order; a run that would start after ``--budget-s`` is reported "not run" with the reason, and one
still running at the budget's end is stopped and reported "timeout". Nothing is downloaded: the
models are random with published shapes (``_fullsize_model.py``), saved once as bf16 safetensors
and loaded by every run through the ordinary path. Results: ``gpu_fullsize.jsonl`` (environment,
then one row per run) and ``gpu_fullsize.md`` (the table) in ``--out``, the table also printed.

``TIFA_LITE_GPU_CHECK_ON_CPU=1`` without CUDA is the dry run: the same runs on tiny models of the
same architectures, the cards rehearsed on the CPU (``TIFA_LITE_REHEARSE``), all in this process;
it catches import errors and API misuse and measures nothing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
DATA = REPO / "data"
DRY_ENV = "TIFA_LITE_GPU_CHECK_ON_CPU"

# Each kind: the recipe per card, the model, the keys changed from the recipe (so a few steps measure it:
# one optimizer step = one micro-batch for SFT/DPO; GRPO keeps the recipe's whole step), steps, warm-up steps.
# The dry run's sizes follow in TINY_OVERRIDES.
KINDS: dict[str, dict[str, Any]] = {
    "sft": {"recipe": {"t4": "sft_qlora_roleplay.yaml", "a10": "sft_qlora_roleplay.yaml"}, "model": "qwen2.5-7b",
            "overrides": {"data.path": str(DATA / "roleplay_sheldon_sample.jsonl"), "data.limit": 64,
                          "data.shuffle": False, "train.gradient_accumulation_steps": 1},
            "steps": 5, "warmup": 1},
    "dpo": {"recipe": {"t4": "dpo_qlora_hh.yaml", "a10": "dpo_qlora_hh.yaml"}, "model": "qwen2.5-7b",
            "overrides": {"data.path": str(DATA / "hh_rlhf_sample.jsonl"), "data.shuffle": False,
                          "train.gradient_accumulation_steps": 1},
            "steps": 4, "warmup": 1},
    "grpo7b": {"recipe": {"t4": "grpo_qlora_t4.yaml", "a10": "grpo_qlora_a10.yaml"}, "model": "qwen2.5-7b",
               "overrides": {"data.path": str(DATA / "gsm8k_sample.jsonl"), "data.format": "gsm8k",
                             "data.shuffle": False, "grpo.use_vllm": "off"},
               "steps": 2, "warmup": 1},
    "grpo05b": {"recipe": {"t4": "grpo_qwen2.5-0.5b_gsm8k.yaml", "a10": "grpo_qwen2.5-0.5b_gsm8k.yaml"},
                "model": "qwen2.5-0.5b",
                "overrides": {"data.path": str(DATA / "gsm8k_sample.jsonl"), "data.format": "gsm8k",
                              "data.shuffle": False, "grpo.use_vllm": "off"},
                "steps": 2, "warmup": 1},
}
TINY_OVERRIDES = {
    "sft": {"data.max_length": 256, "data.limit": 2, "train.warmup_ratio": 0.0},  # one step that moves the adapter
    "dpo": {"data.max_length": 192, "data.limit": 2, "data.overlength": "drop"},
    "grpo7b": {"data.limit": 4, "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1,
               "grpo.num_generations": 2, "grpo.max_completion_length": 8, "grpo.max_prompt_length": 512},
    "grpo05b": {"data.limit": 4, "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1,
                "grpo.num_generations": 2, "grpo.max_completion_length": 8, "grpo.max_prompt_length": 512},
}
TINY_STEPS = {"sft": 1, "dpo": 1, "grpo7b": 1, "grpo05b": 1}  # the dry run checks the code, not the clock
LEVERS = {
    None: {},
    "liger": {"train.use_liger_kernel": True},
    "packed": {"train.packing": True},
}

# Priority order: what the "done" needs first (7B SFT/DPO/GRPO under both caps, plain TRL
# beside), then the merge, the R1 recipe's size, the levers, the Llama-3.1-8B shape.
RUNS = [
    "sft-ours-t4", "sft-trl-t4", "sft-ours-a10", "sft-trl-a10",
    "dpo-ours-t4", "dpo-ours-a10",
    "grpo7b-ours-t4", "grpo7b-trl-t4", "grpo7b-ours-a10", "grpo7b-trl-a10",
    "merge-ours-t4",
    "sft-ours-a10-liger", "sft-trl-a10-liger", "sft-ours-a10-packed", "sft-trl-a10-packed",
    "dpo-ours-a10-liger", "grpo7b-ours-a10-liger",
    "grpo05b-ours-t4", "grpo05b-trl-t4", "grpo05b-ours-a10", "grpo05b-trl-a10",
    "sft-ours-a10-llama8b", "sft-trl-a10-llama8b",
]


def dry_run() -> bool:
    import torch

    return not torch.cuda.is_available() and os.environ.get(DRY_ENV) == "1"


def spec_for(run_id: str, tiny: bool) -> dict[str, Any]:
    """``<kind>-<ours|trl>-<t4|a10>[-<lever>|-llama8b]`` → what one run does."""
    from tifa_lite.config import load_recipe

    kind, side, card, *extra = run_id.split("-")
    lever = next((e for e in extra if e in LEVERS), None)
    model = "llama-3.1-8b" if "llama8b" in extra else None
    if kind == "merge":
        return {"id": run_id, "kind": "merge", "side": side, "card": card, "model": "qwen2.5-7b", "needs": "sft-ours-t4"}
    k = KINDS[kind]
    overrides = {**k["overrides"], **LEVERS[lever], **(TINY_OVERRIDES[kind] if tiny else {})}
    recipe = k["recipe"][card]
    config = load_recipe(REPO / "recipes" / recipe, overrides)
    return {"id": run_id, "kind": "grpo" if kind.startswith("grpo") else kind, "side": side, "card": card,
            "model": model or k["model"], "recipe": recipe, "lever": lever, "overrides": overrides,
            "steps": TINY_STEPS[kind] if tiny else k["steps"], "warmup": k["warmup"],
            "lora": {"r": config.lora.r, "alpha": config.lora.alpha, "dropout": config.lora.dropout},
            "trl_args": {"use_liger_kernel": True} if (side == "trl" and lever == "liger") else {},
            "packing": lever == "packed"}


def skip_reason(spec: dict[str, Any]) -> str | None:
    """Why a run cannot run on this machine, decided before starting it."""
    if spec.get("lever") == "liger" and dry_run() and spec["side"] == "trl":
        return "Liger's Triton kernels need CUDA: the plain script's use_liger_kernel has nothing to run on here"
    if spec.get("lever") == "liger" and not dry_run():
        from tifa_lite.runplan.kernels import liger_importable

        usable, why = liger_importable()
        if not usable:
            return f"{why}: carry its wheel (scripts/gpu_fullsize.sh --help)"
    return None


def environment(tokenizer: str) -> dict[str, Any]:
    import torch

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "liger-kernel",
                 "flash-attn", "triton", "vllm"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    gpu = memory = driver = None
    if torch.cuda.is_available():  # asked of nvidia-smi: this process stays off the card (see Driver.model)
        try:
            query = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                    "--format=csv,noheader,nounits", "--id=0"],
                                   capture_output=True, text=True, timeout=20).stdout.strip()
            gpu, mib, driver = [x.strip() for x in query.split(",")]
            memory = round(float(mib) / 1024, 2)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"mode": "CPU DRY RUN (not a GPU result)" if dry_run() else "gpu",
            "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "commit": commit or None,
            "gpu": gpu, "gpu_memory_gib": memory, "driver": driver, "cuda": torch.version.cuda, "python": sys.version.split()[0], "versions": versions,
            "tokenizer": tokenizer}


class Driver:
    def __init__(self, args):
        self.args = args
        self.tiny = dry_run()
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.deadline = time.time() + args.budget_s
        self.models: dict[str, dict[str, Any]] = {}
        self.failed_builds: dict[str, str] = {}
        self.rows: list[dict[str, Any]] = []
        from _fullsize_model import load_tokenizer

        self.tokenizer, self.tokenizer_note = load_tokenizer(args.tokenizer, self.work)

    def model(self, name: str) -> dict[str, Any]:
        if name not in self.models:
            target = self.work / "models" / name
            if self.tiny:
                from _fullsize_model import build_model

                self.models[name] = build_model(name, target, self.tokenizer, self.tiny)
            else:  # its own process: this one never holds a CUDA context the runs' caps would have to leave room for
                tokenizer_dir = self.work / "tokenizer"
                self.tokenizer.save_pretrained(tokenizer_dir)
                info = self.work / f"model_{name}.json"
                subprocess.run([sys.executable, __file__, "--build-model", name, "--path", str(target),
                                "--tokenizer", str(tokenizer_dir), "--result", str(info)], check=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=max(1.0, self.deadline - time.time()))
                self.models[name] = json.loads(info.read_text(encoding="utf-8"))
            print(f"model {name}: {self.models[name]}", flush=True)
        return self.models[name]

    def run_all(self, ids: list[str]) -> None:
        for run_id in ids:
            spec = spec_for(run_id, self.tiny)
            left = self.deadline - time.time()
            if left < self.args.min_run_s:
                self.add({"id": run_id, "status": "not run", "error": f"time budget: {max(left, 0):.0f} s left "
                          f"of --budget-s {self.args.budget_s}"})
                continue
            reason = skip_reason(spec)
            needed = spec.get("needs")
            if needed:
                before = next((r for r in self.rows if r["id"] == needed), None)
                if not before or before.get("status") != "ok":
                    reason = f"needs the adapter of {needed}, which did not run to the end"
                else:
                    spec["adapter_dir"] = before["adapter_dir"]
            if reason:
                self.add({"id": run_id, "status": "skipped", "error": reason})
                continue
            if spec["model"] in self.failed_builds:
                self.add({"id": run_id, "status": "skipped", "error": self.failed_builds[spec["model"]]})
                continue
            try:
                info = self.model(spec["model"])
            except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
                self.failed_builds[spec["model"]] = f"building the {spec['model']} model failed: {exc}"
                self.add({"id": run_id, "status": "error", "error": self.failed_builds[spec["model"]]})
                continue
            spec.update(model_path=info["path"], vocab=info.get("vocab") or self._vocab(info["path"]))
            self.add(self.one(spec))

    @staticmethod
    def _vocab(path: str) -> int:
        return json.loads((Path(path) / "config.json").read_text())["vocab_size"]

    def one(self, spec: dict[str, Any]) -> dict[str, Any]:
        work = self.work / "runs" / spec["id"]
        if self.tiny and not self.args.processes:  # every run in this process, the card rehearsed on the CPU
            from _fullsize_arms import run

            previous = os.environ.get("TIFA_LITE_REHEARSE")
            os.environ["TIFA_LITE_REHEARSE"] = spec["card"]
            try:
                return run(spec, work)
            finally:
                if previous is None:
                    os.environ.pop("TIFA_LITE_REHEARSE", None)
                else:
                    os.environ["TIFA_LITE_REHEARSE"] = previous
        work.mkdir(parents=True, exist_ok=True)
        spec_file, result = work / "spec.json", work / "result.json"
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               "TIFA_LITE_NO_BF16": "1" if spec["card"] == "t4" else "0", "TOKENIZERS_PARALLELISM": "false"}
        if self.tiny:
            env["TIFA_LITE_REHEARSE"] = spec["card"]
        timeout = max(1.0, self.deadline - time.time())
        log = (work / "log.txt").open("w")
        try:
            proc = subprocess.run([sys.executable, __file__, "--child", str(spec_file), "--result", str(result)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"id": spec["id"], "status": "timeout", "error": f"stopped at the budget's end ({timeout:.0f} s)",
                    "log_tail": _tail(work / "log.txt")}
        finally:
            log.close()
        if not result.is_file():
            return {"id": spec["id"], "status": "error", "error": f"the run's process died (exit {proc.returncode}; "
                    "-9 is a kill, e.g. host memory)", "log_tail": _tail(work / "log.txt")}
        return json.loads(result.read_text(encoding="utf-8"))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        figures = {k: row.get(k) for k in ("status", "max_allocated_gib", "planned_allocator_gib", "tokens_per_s",
                                           "median_step_s", "generation_s", "first_losses", "error") if row.get(k) is not None}
        print(f"[{row['id']}] {figures}", flush=True)


def _tail(path: Path, chars: int = 2500) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="all", help="comma-separated run ids (see --list), or all")
    parser.add_argument("--list", action="store_true", help="print the runs in order and exit")
    parser.add_argument("--budget-s", type=float, default=480, help="no run starts after this; one running then is stopped")
    parser.add_argument("--min-run-s", type=float, default=60,
                        help="do not start a run with less than this left (a 7B run loads for tens of seconds)")
    parser.add_argument("--out", default=None, help="results folder (default $OUT, else benchmarks/results/raw/gpu_fullsize-<time>)")
    parser.add_argument("--work", default=None, help="models and run folders (default: a folder under /tmp)")
    parser.add_argument("--tokenizer", default="auto", help="auto | embedded | samples | a tokenizer folder")
    parser.add_argument("--save-tokenizer", metavar="DIR", help="save the --tokenizer choice in DIR and exit")
    parser.add_argument("--processes", action="store_true",
                        help="dry run: each run in its own process, as on the GPU (default there: all in this one)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--build-model", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_model:
        from transformers import AutoTokenizer

        from _fullsize_model import build_model

        info = build_model(args.build_model, Path(args.path), AutoTokenizer.from_pretrained(args.tokenizer), tiny=False)
        Path(args.result).write_text(json.dumps(info), encoding="utf-8")
        return
    if args.child:
        from _fullsize_arms import run

        spec = json.loads(Path(args.child).read_text(encoding="utf-8"))
        row = run(spec, Path(args.child).parent)
        Path(args.result).write_text(json.dumps(row, default=str), encoding="utf-8")
        return
    if args.save_tokenizer:  # on a machine that has the embedded model, for a GPU box that has not
        from _fullsize_model import load_tokenizer

        tokenizer, note = load_tokenizer(args.tokenizer, Path(args.save_tokenizer))
        tokenizer.save_pretrained(args.save_tokenizer)
        print(f"{note} saved in {args.save_tokenizer}: carry it and pass --tokenizer {args.save_tokenizer}")
        return
    if args.list:
        print("\n".join(RUNS))
        return
    ids = RUNS if args.runs == "all" else args.runs.split(",")
    unknown = [i for i in ids if i not in RUNS]
    if unknown:
        sys.exit(f"--runs: unknown {unknown}; see --list")
    import torch

    if not torch.cuda.is_available() and not dry_run():
        sys.exit(f"no CUDA GPU on this machine: nothing measured ({DRY_ENV}=1 runs the CPU dry run)")
    stamp = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H%M}"
    out = Path(args.out or os.environ.get("OUT") or REPO / "benchmarks" / "results" / "raw" / f"gpu_fullsize-{stamp}")
    args.work = args.work or f"/tmp/tifa_gpu_fullsize-{stamp}"
    driver = Driver(args)
    env = environment(driver.tokenizer_note)
    print(json.dumps(env), flush=True)
    driver.run_all(ids)
    env["models"] = driver.models
    from _fullsize_report import write_report

    table = write_report(out, env, driver.rows)
    for log in sorted((driver.work / "runs").glob("*/log.txt")):  # each run's own output, beside the results
        (out / "logs").mkdir(exist_ok=True)
        shutil.copyfile(log, out / "logs" / f"{log.parent.name}.txt")
    print(table)
    print(f"written to {out}/gpu_fullsize.jsonl and gpu_fullsize.md")


if __name__ == "__main__":
    main()

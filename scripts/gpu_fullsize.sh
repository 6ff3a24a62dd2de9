#!/usr/bin/env bash
# Full size on a real GPU: 7B/8B-shaped QLoRA SFT, DPO and GRPO under a T4's and an A10's memory,
# planned vs measured, beside plain TRL (benchmarks/gpu_fullsize.py does the work).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

usage() {
  cat <<'EOF_USAGE'
usage: bash scripts/gpu_fullsize.sh [--wheels DIR] [benchmarks/gpu_fullsize.py arguments]

On one CUDA GPU (an H100/H200 stands in for the small cards), in about 8 minutes, nothing
downloaded. Models: random Qwen2.5-7B-, Llama-3.1-8B- and Qwen2.5-0.5B-shaped ones (published
configs, in benchmarks/_fullsize_model.py), drawn on the GPU, saved as bf16 safetensors under
--work, and loaded by every run through train(recipe, **overrides), 4-bit on load. Tokenizer: the
embedded SmolLM2's when at hand, else a BPE trained on data/ (--tokenizer DIR for a carried one).
Data: the shipped samples at each recipe's lengths.

Each run is its own process with the allocator capped at the card's memory less the CUDA
context (torch.cuda.set_per_process_memory_fraction):
  t4:  14.74 GiB, fp16 (TIFA_LITE_NO_BF16=1: no bf16, no FlashAttention-2)
  a10: 22.06 GiB, bf16
and records: ok / oom / error, the planner's verdict and allocator peak for the card against
torch.cuda.max_memory_allocated() and max_memory_reserved(), tokens/s (SFT, DPO) or GRPO's step
time split into generation and the rest, the first losses (finite, in range).

Runs, in priority order (--list; --runs ID,ID picks some; later ones are reported "not run"
when --budget-s, default 480, is spent):
  sft|dpo|grpo7b  -ours|-trl  -t4|-a10   7B QLoRA SFT (role-play recipe), DPO (hh recipe),
                                         GRPO (the T4 / A10 QLoRA recipes), ours and plain TRL
  merge-ours-t4                          7B merge in fp16 under the T4 plan (the capped card +
                                         Colab's 12.7 GB RAM) with its self-check
  *-liger, *-packed                      levers: Liger kernels (train.use_liger_kernel / TRL's
                                         use_liger_kernel); padding-free packing, FlashAttention-2
                                         where flash_attn imports (else sdpa, said in the row)
  grpo05b-*                              the R1 recipe's Qwen2.5-0.5B, full-parameter
  sft-*-a10-llama8b                      Llama-3.1-8B shape (torchtune's published anchor)
Results: gpu_fullsize.jsonl + gpu_fullsize.md in --out (default $OUT, else
benchmarks/results/raw/gpu_fullsize-<time>), the table also printed at the end.

  --wheels DIR   first install, from a local folder of wheels (no package index needed),
                 each wheel whose package this Python lacks or has older (scripts/install_wheels.sh;
                 torch is never touched). The set scripts/gpu_check.sh --help lists, plus for the
                 levers:
                   liger-kernel==0.8.5 (py3-none-any, 0.9 MiB; needs triton, which CUDA torch
                   wheels bring):
                     python -m pip download --no-deps --only-binary=:all: liger-kernel==0.8.5 -d .gpu-wheels
                   flash-attn: PyPI has its source only (a long CUDA build); a prebuilt wheel must
                   match the box's torch, CUDA and Python exactly. Without one the packed arms run
                   on sdpa and their rows say so.
                 Without liger-kernel its arms are reported skipped with the reason.

The GPU box has no embedded model (its wheel is 94 MiB): save its tokenizer here and carry it,
  python benchmarks/gpu_fullsize.py --save-tokenizer .gpu-tokenizer   # 3.5 MiB, .gitignore'd
then pass --tokenizer .gpu-tokenizer (without it the runs use a BPE trained on data/, which
needs pytest for tests/gpu/support.py). A device call, e.g.:
  bash scripts/gpu_fullsize.sh --wheels .gpu-wheels --tokenizer .gpu-tokenizer --budget-s 480
  (carry .gpu-wheels and .gpu-tokenizer; timeout about 570 s)

Budget: model creation (draw + write 15 GiB for the 7B; not timed yet, the record holds it) and
every run's load count against --budget-s; give the device command about 90 s more than it.

Developer switch, not a GPU result: TIFA_LITE_GPU_CHECK_ON_CPU=1 runs the same runs on tiny
models of the same architectures, the cards rehearsed on the CPU (TIFA_LITE_REHEARSE), to catch
import errors and API misuse (the table is headed CPU DRY RUN); tests/benchmarks runs it.
EOF_USAGE
}

WHEELS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if [ -n "$WHEELS" ]; then
  PYTHON="$PYTHON" bash scripts/install_wheels.sh "$WHEELS" || exit 2
fi

"$PYTHON" -c "import tifa_lite" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" - <<'PY' || { echo "missing packages: pass --wheels DIR (see --help)" >&2; exit 2; }
import importlib
missing = []
for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "pydantic", "yaml", "safetensors"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # an import that fails for any reason stops here, named
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    raise SystemExit("cannot import: " + "; ".join(missing))
PY

export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_fullsize.py ${ARGS[@]+"${ARGS[@]}"}

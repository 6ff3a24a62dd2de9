#!/usr/bin/env bash
# The GPU check: runs tests/gpu on this machine's CUDA GPU and prints a one-screen summary.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

usage() {
  cat <<'EOF'
usage: bash scripts/gpu_check.sh [--wheels DIR] [extra pytest arguments]

Runs the GPU check suite (tests/gpu, pytest marker `gpu`) on this machine's first CUDA GPU:
  1. QLoRA SFT with the GPU treated as a T4 (TIFA_LITE_NO_BF16=1): fp16, no bf16 tensor in
     the forward, the project's adapter dtype, 30 steps with a finite loss that falls
  2. QLoRA SFT in bf16 (the A10 path; skipped on a GPU without bf16), the same checks
  3. DPO and GRPO (transformers generation) for 3 steps; GRPO with vLLM colocated for
     2 steps when vllm is installed
  4. merge of the SFT adapter in fp16 and bf16, self-check passing on the GPU
  5. the planner's predicted peak vs torch.cuda.max_memory_allocated() (target +-15%)
  6. SFT throughput, tifa_lite vs a plain TRL SFTTrainer script, side by side
  7. as a T4 (TIFA_LITE_NO_BF16=1): GRPO with transformers generation on the 4-bit base (fp16
     heads fed by fp32 norms outside autocast), full-parameter SFT in fp16 (fp32 master weights
     + loss scaler), and a 4-bit chat reply (the path chat/serve/eval/pairs share)
  8. `serve --engine vllm`: vllm serve with the SFT adapter, our template and sampling,
     answering a SillyTavern-shaped request (when vllm is installed)
  9. GRPO-shaped generation (8 rows, 256-token prompt, 128 new tokens) from the 4-bit base
     vs from a copy dequantised once per call (grpo.dequantize_for_generation), fp16 and bf16
Nothing is downloaded: the model is a random Qwen2-shaped one and its tokenizer is
trained on the repo's own data/ samples. Without CUDA every check is skipped with the reason.

  --wheels DIR   first install, from a local folder of wheels (no package index needed),
                 each wheel whose package this Python lacks or has in an older version.
                 Nothing else is upgraded; torch is never touched.

Results: the summary table at the end, and JSON in $TIFA_LITE_GPU_REPORT
(default: $OUT/gpu_check.json when $OUT is set, else /tmp/tifa_gpu_check.json).

The wheel set for a box that has torch, transformers, peft and accelerate (and pandas,
pyarrow, xxhash) but no trl, bitsandbytes, datasets or pydantic, e.g. the lent H200
(Python 3.12, x86-64); 10 wheels, 45.5 MiB. Download it on a machine with PyPI:

  python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu-wheels \
    trl==1.16.0 bitsandbytes==0.50.2 datasets==5.0.1 dill==0.4.1 multiprocess==0.70.19 \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0

(bitsandbytes is tagged manylinux_2_24 only; datasets 5.0.1 asks pyarrow >= 21, 5.1+ asks
>= 24.) .gitignore keeps .gpu-wheels out of git. For the vLLM colocate check add vLLM and its
own pinned dependencies (`vllm==0.33.0`, then what `unzip -p vllm-*.whl '*/METADATA' | grep
^Requires-Dist` lists and the box lacks): several hundred MiB, more than a 64 MiB carry, so
on a box without an index that check stays skipped with its reason. On the GPU box:

  bash scripts/gpu_check.sh --wheels .gpu-wheels

Developer switch, not a GPU result: TIFA_LITE_GPU_CHECK_ON_CPU=1 runs the same tests on a
CPU, smaller and shorter, to catch import errors and API misuse (its table says CPU DRY RUN).
EOF
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

# The checkout itself, without installing it (a GPU box may lack setuptools' build deps).
"$PYTHON" -c "import tifa_lite" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" - <<'PY' || { echo "missing packages: pass --wheels DIR (see --help)" >&2; exit 2; }
import importlib
missing = []
for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "pydantic", "yaml"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # an import that fails for any reason stops the check here, named
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    raise SystemExit("cannot import: " + "; ".join(missing))
PY

export TIFA_LITE_GPU_REPORT="${TIFA_LITE_GPU_REPORT:-${OUT:+$OUT/gpu_check.json}}"
export TIFA_LITE_GPU_REPORT="${TIFA_LITE_GPU_REPORT:-/tmp/tifa_gpu_check.json}"
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
"$PYTHON" -m pytest -p no:cacheprovider tests/gpu -m gpu -q -rs --durations=0 ${ARGS[@]+"${ARGS[@]}"}

#!/usr/bin/env bash
# Install, then run the main job: a short real QLoRA SFT on the CPU (embedded
# SmolLM2-135M-Instruct, shipped role-play sample) with before/after generations.
#   scripts/quickstart.sh [--steps N] [--output-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
VENV="${TIFA_LITE_VENV:-.venv}"
[ -n "${VIRTUAL_ENV:-}" ] || . "$VENV/bin/activate"
exec python -m tifa_lite.training.quickstart "$@"

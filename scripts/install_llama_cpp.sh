#!/usr/bin/env bash
# Build llama-cpp-python from PyPI's source distribution once, keep the wheel in a cache,
# and install it into the active venv (or $TIFA_LITE_VENV). It backs the llama.cpp check
# of a GGUF export (`tifa-lite export gguf --check llama.cpp`, pytest -m llamacpp).
#
# Why from source: PyPI publishes no binary wheel for it, only the sdist, which compiles
# llama.cpp (about 5 minutes on 2 idle cores, 2026-12-04; far longer on a loaded machine). The wheel is cached under
# $TIFA_LITE_WHEELS (default ~/.cache/tifa_lite/wheels), so it is built once per machine.
# GGML_NATIVE=OFF: a cached wheel must not carry one CPU's instruction set to another.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="0.3.36"
WHEELS="${TIFA_LITE_WHEELS:-$HOME/.cache/tifa_lite/wheels}"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  # shellcheck disable=SC1091
  . "${TIFA_LITE_VENV:-.venv}/bin/activate"
fi
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION from source into $WHEELS (once; long on 2 cores)" >&2
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF}" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    python -m pip wheel -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -w "$WHEELS"
fi
python -m pip install -q --find-links "$WHEELS" "llama-cpp-python==$VERSION"
python -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'from', llama_cpp.__file__)"

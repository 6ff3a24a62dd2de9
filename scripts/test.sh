#!/usr/bin/env bash
# Install everything the tests need, then run them. `.ci/run` calls this.
#   scripts/test.sh            → the whole suite (unit + slow end-to-end + distributed rehearsal)
#   scripts/test.sh -m "not slow"   → extra pytest arguments are passed through
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test,deepspeed,serve,web
# System packages some tests drive: Chromium for the web page test, Go for rendering the
# Ollama TEMPLATE with Go's own text/template. Idempotent; where apt cannot install them (no
# root, no password-less sudo, no network) those tests report skipped with the reason.
bash scripts/install_test_system_packages.sh || echo "system test packages not installed: their tests will skip" >&2
VENV="${TIFA_LITE_VENV:-.venv}"
[ -n "${VIRTUAL_ENV:-}" ] || . "$VENV/bin/activate"
# Convert the embedded model once before the clock of any test starts.
python -c "from tifa_lite.modeling.embedded import embedded_checkpoint as e; print('embedded model:', e('smollm2-135m-instruct'))"
set +e
python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
# pytest exit 5 = no tests collected: that must fail CI, not pass it.
if [ "$status" -eq 5 ]; then
  echo "no tests were collected: failing" >&2
  exit 1
fi
exit "$status"

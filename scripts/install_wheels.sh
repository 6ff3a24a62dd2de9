#!/usr/bin/env bash
# Installs, from a local folder of wheels (no package index needed), each wheel whose package this
# Python lacks or has in an older version; one by one, without dependencies, so nothing the machine
# already has is replaced (torch is never touched). Shared by scripts/gpu_check.sh and
# scripts/gpu_fullsize.sh.  usage: bash scripts/install_wheels.sh DIR   (PYTHON picks the interpreter)
set -uo pipefail
PYTHON="${PYTHON:-python3}"
WHEELS="${1:?usage: install_wheels.sh DIR}"
[ -d "$WHEELS" ] || { echo "--wheels $WHEELS: no such folder" >&2; exit 2; }
NEEDED=$("$PYTHON" - "$WHEELS" <<'PY'
import importlib.metadata as md, pathlib, sys
try:
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # a bare Python: pip carries its own copy
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version, *_ = parse_wheel_filename(wheel.name)
    try:
        have = Version(md.version(name))
    except md.PackageNotFoundError:
        have = None
    if have is None or have < version:
        print(wheel)
        print(f"  {canonicalize_name(name)} {have or 'missing'} -> {version}", file=sys.stderr)
PY
)
if [ -n "$NEEDED" ]; then
  # shellcheck disable=SC2086
  "$PYTHON" -m pip install -q --no-index --no-deps --no-cache-dir $NEEDED || { echo "wheel install failed" >&2; exit 2; }
else
  echo "every wheel in $WHEELS is already installed (same or newer)"
fi

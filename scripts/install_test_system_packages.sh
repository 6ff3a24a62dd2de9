#!/usr/bin/env bash
# Debian packages for the browser and Go-template tests (root or sudo; idempotent).
set -euo pipefail
PACKAGES=(chromium chromium-driver golang-go)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
# -n: never stop a test run to ask for a password.
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"

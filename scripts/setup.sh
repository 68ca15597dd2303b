#!/usr/bin/env bash
# One-time (and idempotent) set-up: system packages, the .venv virtualenv, pinned requirements.
# A second run only checks that nothing changed, and takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

# System packages the tests use (Debian): espeak-ng, chromium for the console test, postgresql (the tests
# start their own server on a temp dir; the package's default cluster need not run).
APT_PACKAGES=(espeak-ng chromium postgresql)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages: ${missing[*]}" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi

# requirements-nodeps.txt: installed without their dependencies (only a file they ship is used; the
# Dockerfile installs the same list).
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing requirements (first run compiles llama.cpp: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip wheel
  # A portable llama.cpp build: a native (-march=native) build crashed on these machines.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF" .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
  echo "$want" > "$stamp"
fi

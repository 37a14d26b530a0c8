"""The clients' annotations allow what the docs write: ``contextlib.aclosing`` around a frames loop (its
``aclose()``), and a ``stream`` flag that is a variable, not a literal."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "client"
USES = '''
import contextlib
import numpy as np
from vocos_client import AsyncAudioChunks, AsyncClient, Audio, AudioChunks, Client

def sync_uses(client: Client, mel: np.ndarray, codes: np.ndarray, streamed: bool) -> None:
    answers: list[Audio | AudioChunks] = [client.decode_mel(mel, stream=streamed),
                                          client.decode_encodec(codes, stream=streamed),
                                          client.resynthesize(b"RIFF", stream=streamed)]
    whole: Audio = client.decode_mel(mel)
    with contextlib.closing(client.stream_mel_frames([mel])) as audio:
        for piece in audio:
            break

async def async_uses(client: AsyncClient, mel: np.ndarray, codes: np.ndarray, streamed: bool) -> None:
    answers: list[Audio | AsyncAudioChunks] = [await client.decode_mel(mel, stream=streamed),
                                               await client.decode_encodec(codes, stream=streamed),
                                               await client.resynthesize(b"RIFF", stream=streamed)]
    chunks: AsyncAudioChunks = await client.decode_mel(mel, stream=True)
    async with contextlib.aclosing(client.stream_mel_frames([mel])) as audio:
        async for piece in audio:
            break
    async with contextlib.aclosing(client.stream_encodec_frames([codes])) as audio:
        async for piece in audio:
            break
'''


# Formats misspelt or mixed up (a stream's for a whole answer's, and the other way), each a type error.
MISUSES = '''
import numpy as np
from vocos_client import AsyncClient, Client

def misuses(client: Client, aclient: AsyncClient, mel: np.ndarray) -> None:
    client.decode_mel(mel, format="wav17")
    client.resynthesize(b"RIFF", format="pcm16")
    client.stream_mel(format="wav16")
    aclient.stream_encodec(format="f64")
'''


def _mypy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> tuple[str, int]:
    api = pytest.importorskip("mypy.api")
    uses = tmp_path / "uses.py"
    uses.write_text(source, encoding="utf-8")
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n", encoding="utf-8")  # not the repository's: its package list and options
    monkeypatch.setenv("MYPYPATH", str(CLIENT))
    out, err, status = api.run([str(uses), "--config-file", str(config), "--python-version", "3.11",
                                "--cache-dir", str(tmp_path / "cache"), "--no-error-summary"])
    return out + err, status


@pytest.mark.slow
def test_the_documented_uses_type_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``aclosing(client.stream_mel_frames(...))`` was a mypy error (an AsyncIterator has no ``aclose``), and so
    was ``decode_mel(mel, stream=flag)`` with ``flag: bool`` (only the literals had an overload)."""
    out, status = _mypy(tmp_path, monkeypatch, USES)
    assert status == 0, out


@pytest.mark.slow
def test_the_documented_uses_type_check_under_strict(tmp_path: Path) -> None:
    """A caller's ``mypy --strict`` with the client's source on its path (a checkout, as this repository's own
    config has it) failed in the client itself: ``2**attempt`` and a checked ``int(rate)`` returned Any."""
    pytest.importorskip("mypy.api")
    (tmp_path / "uses.py").write_text(USES, encoding="utf-8")
    (tmp_path / "mypy.ini").write_text("[mypy]\n", encoding="utf-8")
    # In a process of its own: in pytest's, mypy takes this process's sys.path for site-packages, finds the client
    # there as an installed package, and hides the errors in its source that the caller's mypy shows.
    result = subprocess.run([sys.executable, "-m", "mypy", "uses.py", "--strict", "--config-file", "mypy.ini",
                             "--cache-dir", str(tmp_path / "cache"), "--no-error-summary"],
                            cwd=tmp_path, env={"MYPYPATH": str(CLIENT), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_misspelt_format_is_a_type_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``format`` was any str to the type checker: a typo reached the call, to fail when it ran."""
    out, status = _mypy(tmp_path, monkeypatch, MISUSES)
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1 and [line.split(":")[1] for line in errors] == ["6", "7", "8", "9"], out  # each misuse


@pytest.mark.slow
def test_the_installed_package_is_typed_for_the_callers_type_checker(tmp_path: Path) -> None:
    """Installed (the wheel holds what client/vocos_client holds; tests/client/test_import.py checks py.typed is
    in it), the package had no py.typed: mypy skipped it ("missing library stubs or py.typed marker") and every
    value of the client was Any to its users. Run as a user's mypy runs: the package on the path, no MYPYPATH."""
    pytest.importorskip("mypy.api")
    site = tmp_path / "site"
    shutil.copytree(CLIENT / "vocos_client", site / "vocos_client", ignore=shutil.ignore_patterns("__pycache__"))
    uses = tmp_path / "uses.py"
    uses.write_text("import numpy as np\nfrom vocos_client import Client\n"
                    "reveal_type(Client().decode_mel(np.zeros((100, 4))))\n", encoding="utf-8")
    (tmp_path / "mypy.ini").write_text("[mypy]\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "mypy", str(uses), "--config-file", str(tmp_path / "mypy.ini"),
                             "--cache-dir", str(tmp_path / "cache"), "--no-error-summary"],
                            cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and 'Revealed type is "vocos_client.wire.Audio"' in result.stdout, \
        result.stdout + result.stderr

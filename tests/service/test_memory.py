"""The process-wide memory settings the soak's figures led to (service.runtime.memory)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.runtime import memory


def test_defaults_apply_unless_the_operator_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    thresholds: list[tuple[str, int]] = []
    monkeypatch.setattr(memory, "set_mmap_threshold", lambda size: thresholds.append(("mmap", size)))
    monkeypatch.setattr(memory, "set_trim_threshold", lambda size: thresholds.append(("trim", size)))
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    memory.bound_memory_growth()
    assert memory.os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    assert thresholds == [("mmap", 8 * 1024 * 1024), ("trim", memory.TRIM_THRESHOLD_BYTES)]

    thresholds.clear()
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    memory.bound_memory_growth()
    assert memory.os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512"
    assert thresholds == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_accepts_the_mmap_threshold() -> None:
    assert memory.set_mmap_threshold(memory.MMAP_THRESHOLD_BYTES) is True


# In a thread, as the server's model thread, whose blocks come from an arena of its own: a 6 MiB block (a
# batch's MLP scratch) allocated, written and freed 20 times, and the page faults the process took meanwhile.
_REUSE = """
import ctypes, sys, threading
from service.runtime.memory import MMAP_THRESHOLD_BYTES, bound_memory_growth, set_mmap_threshold
if sys.argv[1] == "bounded":
    bound_memory_growth()
else:  # the mmap threshold alone, as the server set it before
    set_mmap_threshold(MMAP_THRESHOLD_BYTES)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])
def use_once():
    block = libc.malloc(6 << 20)
    libc.memset(block, 1, 6 << 20)
    libc.free(block)
def run():
    use_once()
    before = faults()
    for _ in range(20):
        use_once()
    print(faults() - before)
thread = threading.Thread(target=run)
thread.start()
thread.join()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc")
def test_a_freed_scratch_block_is_reused_without_page_faults() -> None:
    """With the mmap threshold fixed and the trim threshold left at glibc's 128 kB, such a block was handed back
    to the kernel when freed and faulted in again at its next use (1536 pages each time)."""
    faults = {}
    for mode in ("bounded", "mmap threshold alone"):
        result = subprocess.run([sys.executable, "-c", _REUSE, mode], capture_output=True, text=True, timeout=120,
                                env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        faults[mode] = int(result.stdout)
    assert faults["mmap threshold alone"] >= 20 * 1024, faults  # the control: the count sees them
    assert faults["bounded"] < 1536, faults  # less than one block's pages in all 20 uses

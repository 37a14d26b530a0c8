"""The process-wide memory settings the soak's figures led to (service.runtime.memory)."""

from __future__ import annotations

import sys

import pytest

from service.runtime import memory


def test_defaults_apply_unless_the_operator_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    thresholds: list[int] = []
    monkeypatch.setattr(memory, "set_mmap_threshold", thresholds.append)
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    memory.bound_memory_growth()
    assert memory.os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    assert thresholds == [8 * 1024 * 1024]

    thresholds.clear()
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    memory.bound_memory_growth()
    assert memory.os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512"
    assert thresholds == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_accepts_the_mmap_threshold() -> None:
    assert memory.set_mmap_threshold(memory.MMAP_THRESHOLD_BYTES) is True

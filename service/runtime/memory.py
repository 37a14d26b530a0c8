"""Process-wide memory settings applied once at start, so resident memory stays flat under varied traffic.

Every request length is a new tensor shape. Two caches that are harmless at fixed shapes grow when
shapes keep changing:

- oneDNN, PyTorch's CPU kernel library, keeps a compiled kernel per convolution shape, 1024 by
  default;
- glibc raises its mmap threshold each time a large block is freed, so buffers of ever new sizes
  end up carved from the heap, whose high-water mark only rises.

In the soak (``scripts/soak.py``) the server's RSS kept growing with both at their defaults, and
stays flat with 64 kernels and a fixed threshold (figures in docs/reliability.md). Values an
operator sets in the environment win.

The threshold is 8 MiB: a batch's MLP scratch (1024 x 1536 floats, 6 MiB) and the head's spectra
of a typical batch then come from the heap and are reused, instead of being mapped and
page-faulted in at every call (4 and 16 MiB measured against it: docs/performance.md). Blocks above
the threshold, from batches of long inputs, are still mapped, which bounds how far the heap can
fragment.

Fixing the mmap threshold also fixes glibc's trim threshold, at 128 kB (glibc raises it with the mmap
threshold otherwise): a large block freed at the top of the heap was handed back to the kernel at once
and page-faulted in again at the next call, about 9 000 page faults per 10 s request. The trim threshold
is therefore set too, to TRIM_THRESHOLD_BYTES; each malloc arena keeps at most that much free memory at
the top of its heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

KERNEL_CACHE_CAPACITY = 64
MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024
# glibc's mallopt parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def bound_memory_growth() -> None:
    """Cap oneDNN's kernel cache and fix glibc's mmap and trim thresholds, unless the environment sets them.

    Call it before any model runs: oneDNN reads its variable when it builds its first kernel.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(KERNEL_CACHE_CAPACITY))
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        set_mmap_threshold(MMAP_THRESHOLD_BYTES)
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        set_trim_threshold(TRIM_THRESHOLD_BYTES)


def set_mmap_threshold(size: int) -> bool:
    """``mallopt(M_MMAP_THRESHOLD, size)``, which also stops glibc from raising it; False without glibc."""
    return _mallopt(_M_MMAP_THRESHOLD, size)


def set_trim_threshold(size: int) -> bool:
    """``mallopt(M_TRIM_THRESHOLD, size)``: free memory an arena keeps at its heap's top; False without glibc."""
    return _mallopt(_M_TRIM_THRESHOLD, size)


def _mallopt(parameter: int, value: int) -> bool:
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows): nothing to tune
        return False
    return bool(mallopt(parameter, value))

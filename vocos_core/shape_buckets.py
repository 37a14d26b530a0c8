"""Sizes rounded up to a few buckets, so that oneDNN sees few distinct shapes.

oneDNN generates machine code (JIT) for every new shape of a matmul or convolution, about 2 ms a
shape here, and caches it. Streaming steps and whole decodes bring ever new row counts, so without
rounding every call paid that cost again; rounded up to eight sizes per octave, a few dozen shapes
cover every call, at most 12.5 % of extra rows (zeros, whose outputs are dropped).
"""

from __future__ import annotations

# Row counts below this round up to a multiple of it: tiny calls cost little whatever their padding.
MIN_STEP = 16
# Buckets per octave: a power of two. 8 keeps the padding under 1/8 of the rows.
PER_OCTAVE = 8


def bucket(n: int) -> int:
    """The smallest bucket ``>= n`` (``n`` itself for ``n <= 0``): a multiple of ``MIN_STEP`` and of
    ``2**floor(log2 n) / PER_OCTAVE``."""
    if n <= 0:
        return n
    step = max(MIN_STEP, (1 << (n.bit_length() - 1)) // PER_OCTAVE)
    return -(-n // step) * step

"""vocos-serve: the Vocos vocoder behind an HTTP API with dynamic batching, health probes and metrics."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

"""The process's logging: one handler, on the root logger, through which every record passes once."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """Log at ``level`` (a Settings log level; ``trace`` is DEBUG) to stderr, each record once."""
    name = "DEBUG" if level == "trace" else level.upper()
    logging.basicConfig(level=name, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # huggingface_hub attaches a bare StreamHandler to its logger when imported, and its records also
    # propagate to the root: each would print twice. Imported here so that its handler exists to remove.
    import huggingface_hub  # noqa: F401

    hub = logging.getLogger("huggingface_hub")
    for handler in list(hub.handlers):
        hub.removeHandler(handler)

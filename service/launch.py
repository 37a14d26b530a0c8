"""``vocos-serve``'s entry point: stop signals get a handler before the server's imports run.

As PID 1 of a container (Kubernetes, ``docker run`` without ``--init``) a signal without a handler is
ignored, and importing the server (torch, uvicorn, FastAPI) takes seconds: a pod stopped then waited for
the orchestrator's SIGKILL. :func:`service.__main__.main` installs its own handlers as it starts.
"""

from __future__ import annotations

import os
import signal
import sys
import types


def _stop_starting(signum: int, frame: types.FrameType | None) -> None:
    # Nothing to undo yet (no port bound, no model loaded), and logging is not configured: one plain line.
    sys.stderr.write(f"vocos-serve: stopped by {signal.Signals(signum).name} while starting\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def main() -> int:
    """Install the stop handlers, then import and run the server's ``main``."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_starting)
    from service.__main__ import main as serve

    return serve()

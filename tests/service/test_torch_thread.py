"""The model thread gets the interpreter back promptly from a thread running Python (service.engine.torch_thread)."""

from __future__ import annotations

import statistics
import sys
import threading
import time

from service.engine.torch_thread import GIL_SWITCH_INTERVAL_S, hand_over_promptly


def _wait_for_the_interpreter(samples: int = 40) -> float:
    """The median time this thread waits, after a 1 ms sleep (which lets go of the interpreter), to get the
    interpreter back from a thread running pure Python meanwhile, as the event loop does."""
    stop = threading.Event()

    def run_python() -> None:
        while not stop.is_set():
            pass

    other = threading.Thread(target=run_python, daemon=True)
    other.start()
    try:
        waits = []
        for _ in range(samples):
            start = time.perf_counter()
            time.sleep(0.001)
            waits.append(time.perf_counter() - start - 0.001)
        return statistics.median(waits)
    finally:
        stop.set()
        other.join()


def test_the_interpreter_passes_back_within_the_short_switch_interval() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)  # CPython's default
        default = _wait_for_the_interpreter()
        hand_over_promptly()
        assert sys.getswitchinterval() == GIL_SWITCH_INTERVAL_S
        prompt = _wait_for_the_interpreter()
    finally:
        sys.setswitchinterval(before)
    assert prompt < default / 2, f"waited {prompt * 1e3:.2f} ms for the interpreter, {default * 1e3:.2f} ms at 5 ms"

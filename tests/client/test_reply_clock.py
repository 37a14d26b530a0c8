"""The stream sessions' ReplyClock, whose state the producer's thread (sent, ended) and the consumer's (heard)
both change."""

from __future__ import annotations

import inspect
import sys
import threading
import time
from types import FrameType
from typing import Any

from vocos_client.session import ReplyClock


def test_a_message_heard_while_the_end_is_recorded_leaves_the_done_message_owed() -> None:
    """The consumer hears a message just before the producer's ended() records the end: the clock stopped (owed
    nothing, the end sent), so a server that then hung before its done message was waited for without limit."""
    clock = ReplyClock(0.05, lookahead_frames=6)
    clock.sending(30)  # a message is owed already
    clock.sent()
    lines, _ = inspect.getsourcelines(ReplyClock.ended)
    first = ReplyClock.ended.__code__.co_firstlineno
    end_line = first + next(i for i, line in enumerate(lines) if "self._end = True" in line)
    consumer = threading.Thread(target=clock.heard)

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is ReplyClock.ended.__code__:
            if event == "line" and frame.f_lineno == end_line and not consumer.is_alive():
                consumer.start()  # the consumer's heard() runs between ended()'s steps, as a thread switch lets it
                consumer.join(0.2)
            return trace
        return None

    sys.settrace(trace)
    try:
        clock.ended()
    finally:
        sys.settrace(None)
    consumer.join(5)
    assert not consumer.is_alive()
    time.sleep(0.1)
    assert clock.expired(), "the done message is owed after the end, whatever was heard while it was recorded"

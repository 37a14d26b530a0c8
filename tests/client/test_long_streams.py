"""A stream may stay open longer than the server's header timeout (the headers of its upgrade request came
long ago): BoundedH11Protocol (service/http/server.py) disarms its header timer on the WebSocket upgrade."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from service.testing import ServerProcess
from vocos_client import Client

MEL = np.random.default_rng(4).standard_normal((100, 40)).astype(np.float32) - 4.0
SERVER_FLAGS = ("--header-timeout-s", "1")


def test_a_stream_outlives_the_header_timeout(server: ServerProcess) -> None:
    def slow_tts() -> Iterator[np.ndarray]:
        for at in range(0, 40, 10):
            time.sleep(0.6)  # 2.4 s in all, beyond the 1 s header timeout
            yield MEL[:, at:at + 10]

    with Client(server.url) as client:
        audio = np.concatenate(list(client.stream_mel_frames(slow_tts(), format="f32")))
        offline = client.decode_mel(MEL).samples
    assert audio.size == offline.size and np.abs(audio - offline).max() <= 1e-4

"""A stream message larger than the server takes (VOCOS_MAX_BODY_BYTES) is refused by the server's WebSocket
layer with close code 1009 (RFC 6455: message too big); the client reports it as the HTTP API's 413."""

from __future__ import annotations

import numpy as np
import pytest

from service.testing import ServerProcess
from vocos_client import Client, VocosClientError

SERVER_FLAGS = ("--max-body-bytes", "200000")


def test_a_stream_message_over_the_body_limit_is_413(server: ServerProcess) -> None:
    small, big = (np.zeros((100, t), np.float32) for t in (20, 1000))  # 8 kB and 400 kB of frames
    with Client(server.url) as client:
        assert np.concatenate(list(client.stream_mel_frames([small]))).size == 19 * 256
        with pytest.raises(VocosClientError) as caught:
            list(client.stream_mel_frames([small, big]))
    assert (caught.value.status, caught.value.error) == (413, "payload_too_large")
    assert "VOCOS_MAX_BODY_BYTES" in caught.value.message

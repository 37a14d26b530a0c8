"""Fuzzing the decode endpoints: whatever the body and its type, the answer is never a 5xx."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import running_app, tone

from service.runtime.models import ServedModel
from service.settings import Settings
from service.testing import audio_file, npy_bytes

_BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: json.dumps(v).encode(), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(
            st.sampled_from(["mel", "codes", "bandwidth", "bandwidth_id", "x"]), children, max_size=3),
        max_leaves=20)),
    st.builds(npy_bytes, st.sampled_from([np.zeros((100, 3), np.float32), np.ones((2, 4), np.int64),
                                          np.zeros((0,), np.float32), np.array(3.0), np.zeros((8, 2), np.uint8),
                                          np.full((100, 2), 1e38, np.float32)])),
    st.builds(lambda cut: audio_file(tone(0.2, 16000), 16000, "FLAC")[:cut], st.integers(0, 2000)),
)
_TYPES = st.sampled_from(["application/json", "application/x-npy", "audio/wav", "audio/mpeg", "text/plain", ""])
_PATHS = st.sampled_from(["/decode/mel", "/decode/encodec", "/resynthesize", "/resynthesize?model=encodec&bandwidth=6"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=_PATHS, body=_BODIES, content_type=_TYPES)
def test_no_input_produces_a_500(base_settings: Settings, models: dict[str, ServedModel], path: str,
                                 body: bytes, content_type: str) -> None:
    async def post() -> httpx.Response:
        async with running_app(base_settings, models, wait_ready=False) as h:
            headers = {"content-type": content_type} if content_type else {}
            return await h.client.post(path, content=body, headers=headers)

    response = asyncio.run(post())
    assert response.status_code < 500, (path, content_type, body[:80], response.text)
    if response.status_code >= 400:
        assert response.json()["error"]["message"]

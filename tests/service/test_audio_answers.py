"""Answers in each format at any documented rate: what FLAC cannot carry is a 422 that says what it can."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from service_helpers import AppHarness, tone

from service.testing import audio_file, npy_bytes

pytestmark = pytest.mark.asyncio

NPY = {"content-type": "application/x-npy"}


async def test_flac_at_a_rate_it_cannot_carry_is_422_not_500(app: AppHarness) -> None:
    """``?sample_rate=96001&format=flac`` was a 500 after the compute: libFLAC refuses rates above 65535 Hz that
    are no multiple of 10 Hz. Asked through Accept, the same."""
    mel = npy_bytes(np.random.default_rng(0).standard_normal((100, 20)).astype(np.float32) - 4)
    upload = audio_file(tone(0.3, 16000), 16000)
    for path, body, headers in [
        ("/decode/mel?sample_rate=96001&format=flac", mel, NPY),
        ("/resynthesize?sample_rate=96001", upload, {"content-type": "audio/wav", "accept": "audio/flac"}),
    ]:
        response = await app.client.post(path, content=body, headers=headers)
        assert response.status_code == 422, (path, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_parameter"
        assert "FLAC cannot carry a sample rate of 96001 Hz" in error["message"]
        assert "such as 96000, or format=wav16" in error["message"]
    served = await app.client.post("/decode/mel?sample_rate=96000&format=flac", content=mel, headers=NPY)
    assert served.status_code == 200
    info = sf.info(io.BytesIO(served.content))
    assert (info.format, info.samplerate) == ("FLAC", 96000)


async def test_a_rate_flac_cannot_carry_is_refused_before_the_body_is_read(app: AppHarness) -> None:
    """Refused before any work: a body the server never reads (here, one that is no mel) gets the format's 422."""
    response = await app.client.post("/decode/mel?sample_rate=96001&format=flac", content=b"not a mel", headers=NPY)
    assert response.status_code == 422, response.text
    assert "FLAC cannot carry a sample rate of 96001 Hz" in response.json()["error"]["message"]

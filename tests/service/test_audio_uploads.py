"""/resynthesize uploads as other tools label them: the decoder goes by the content, so each name a common tool
gives a file it decodes is taken, and the answer lasts exactly as long as the file."""

from __future__ import annotations

import io

import pytest
import soundfile as sf
from service_helpers import AppHarness, tone

from service.testing import audio_file

pytestmark = pytest.mark.asyncio

# (Content-Type, container, subtype): what xdg-mime / GIO (shared-mime-info), mime-db and Windows registries say.
LABELS = [
    ("audio/x-vorbis+ogg", "OGG", "VORBIS"),
    ("audio/x-opus+ogg", "OGG", "OPUS"),
    ("audio/x-aifc", "AIFF", "PCM_16"),
    ("audio/x-caf", "CAF", "PCM_16"),
    ("audio/mpeg3", "MP3", "MPEG_LAYER_III"),
    ("audio/x-mpeg-3", "MP3", "MPEG_LAYER_III"),
]


async def test_the_labels_tools_give_decodable_files_are_taken(app: AppHarness) -> None:
    for content_type, container, subtype in LABELS:
        body = audio_file(tone(0.5, 48000), 48000, container, subtype)
        frames = sf.info(io.BytesIO(body)).frames
        response = await app.client.post("/resynthesize", content=body, headers={"content-type": content_type})
        assert response.status_code == 200, (content_type, response.text)
        answer = sf.info(io.BytesIO(response.content))
        assert (answer.samplerate, answer.frames) == (24000, (frames + 1) // 2), content_type
        form = await app.client.post("/resynthesize", files={"file": (f"a.{container.lower()}", body, content_type)})
        assert form.status_code == 200, (content_type, form.text)


async def test_a_type_no_decoder_here_reads_is_still_415(app: AppHarness) -> None:
    response = await app.client.post("/resynthesize", content=b"\0" * 64, headers={"content-type": "audio/aac"})
    assert response.status_code == 415
    assert "expected one of application/octet-stream" in response.json()["error"]["message"]

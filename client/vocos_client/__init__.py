"""A Python client of vocos-serve: numpy in, numpy out, over HTTP and WebSocket streams.

Needs only numpy, httpx and websockets (``pip install ./client`` from a checkout); none of the server's
dependencies. ``Client`` blocks, ``AsyncClient`` has the same methods as coroutines::

    from vocos_client import Client
    with Client("http://localhost:8000") as client:
        audio = client.decode_mel(mel)                 # mel (100, T) float32 -> Audio, samples ((T-1)*256,)
        for chunk in client.stream_mel_frames(tts()):  # frames (100, t_i) as a TTS makes them -> audio chunks
            play(chunk)
"""

from .async_client import AsyncClient
from .async_stream import AsyncStreamSession
from .chunks import AsyncAudioChunks, AudioChunks
from .client import Client
from .errors import VocosClientError
from .retry import RetryPolicy
from .session import StreamInfo
from .sync_stream import StreamSession
from .wav import WavFormat, WavReader, read_wav
from .wire import AnswerFormat, Audio, StreamFormat

__all__ = [
    "AnswerFormat", "AsyncAudioChunks", "AsyncClient", "AsyncStreamSession", "Audio", "AudioChunks", "Client",
    "RetryPolicy", "StreamFormat", "StreamInfo", "StreamSession", "VocosClientError", "WavFormat", "WavReader",
    "read_wav",
]

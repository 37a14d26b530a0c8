"""Streams under the service's rules: API keys, the stream limits and timeouts, disconnects, drain, and
the stream metrics."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
from stream_helpers import collect, error_of

from service.http.state import state_of
from service.runtime.models import ServedModel
from service.testing import npy_bytes as npy


def test_streams_need_the_api_key_when_the_server_has_keys(client_for: Any) -> None:
    client = client_for(api_keys="k1")
    with client.websocket_connect("/stream/mel") as ws:
        error, code = error_of(ws)
    assert (error["status"], code) == (401, 4401)
    with client.websocket_connect("/stream/mel", headers={"Authorization": "Bearer k1"}) as ws:
        assert json.loads(ws.receive_text())["type"] == "start"
        assert ws.accepted_subprotocol is None  # none offered, none chosen


def test_a_browser_sends_the_key_as_a_subprotocol_and_gets_vocos_chosen(client_for: Any) -> None:
    """A page's WebSocket cannot send Authorization; it offers ["vocos", "vocos.bearer.<base64url key>"], and a
    browser fails the handshake unless the answer names one of those: "vocos", never the key's."""
    client = client_for(api_keys="k1,k2")
    with client.websocket_connect("/stream/mel", subprotocols=["vocos", "vocos.bearer.azI"]) as ws:
        assert json.loads(ws.receive_text())["type"] == "start"
        assert ws.accepted_subprotocol == "vocos"
    with client.websocket_connect("/stream/mel", subprotocols=["vocos", "vocos.bearer.azM"]) as ws:  # "k3"
        error, code = error_of(ws)
        assert ws.accepted_subprotocol == "vocos"  # the error arrives: the browser did not fail the handshake
    assert (error["status"], error["message"], code) == (401, "invalid API key", 4401)
    with client.websocket_connect("/stream/mel", subprotocols=["vocos"]) as ws:
        error, code = error_of(ws)
    assert (error["status"], code) == (401, 4401)
    assert "offer the subprotocols 'vocos' and 'vocos.bearer." in error["message"]


@pytest.mark.parametrize(("first_path", "second_path"), [
    ("/stream/mel", "/stream/mel"),
    # An EnCodec stream without a bandwidth opens on its first chunk; it is refused before sending one.
    ("/stream/encodec?bandwidth_id=0", "/stream/encodec"),
    # ... and holds its place from then on: a second one is refused while the first has sent nothing.
    ("/stream/encodec", "/stream/encodec"),
])
def test_the_concurrent_stream_limit_answers_503_with_a_close_code(client_for: Any, first_path: str,
                                                                   second_path: str) -> None:
    client = client_for(max_streams=1)
    with client.websocket_connect(first_path) as first:
        assert json.loads(first.receive_text())["type"] == "start"
        with client.websocket_connect(second_path) as second:
            error, code = error_of(second)
    assert (error["status"], error["error"], code) == (503, "too_many_streams", 4503)
    assert error["message"].endswith("streams open, its limit (VOCOS_MAX_STREAMS)")
    assert isinstance(error["retry_after"], int) and error["retry_after"] >= 1  # the HTTP answer's Retry-After


def test_streams_refused_before_they_begin_are_counted_by_status(client_for: Any) -> None:
    """A refused stream (limit, key, model, parameter) left no trace in any metric."""
    client = client_for(max_streams=1, api_keys="k1")
    key = {"Authorization": "Bearer k1"}
    with client.websocket_connect("/stream/mel", headers=key) as first:
        assert json.loads(first.receive_text())["type"] == "start"
        for path, headers in (("/stream/mel", key), ("/stream/mel", {}), ("/stream/encodec?model=nope", key),
                              ("/stream/mel?nope=1", key)):
            with client.websocket_connect(path, headers=headers) as refused:
                error_of(refused)
    metrics = client.get("/metrics", headers=key).text
    for endpoint, status in (("/stream/mel", 503), ("/stream/mel", 401), ("/stream/encodec", 404),
                             ("/stream/mel", 422)):
        assert f'vocos_streams_refused_total{{endpoint="{endpoint}",status="{status}"}} 1.0' in metrics, status
    assert 'vocos_streams_refused_total{endpoint="/stream/encodec",status="503"} 0.0' in metrics


def test_a_stream_longer_than_its_audio_limit_is_refused(client_for: Any, models: dict[str, ServedModel]) -> None:
    client = client_for(max_stream_audio_seconds=0.5)
    mel = np.zeros((models["mel"].n_features, 30), np.float32)  # 30 frames of 256 samples: 0.32 s each push
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        ws.send_bytes(npy(mel))
        ws.send_bytes(npy(mel))
        error, code = error_of(ws)
    assert (error["status"], code) == (413, 4413) and "VOCOS_MAX_STREAM_AUDIO_SECONDS" in error["message"]


def test_a_quiet_stream_is_closed_when_its_open_time_runs_out(client_for: Any,
                                                               models: dict[str, ServedModel]) -> None:
    """VOCOS_MAX_STREAM_DURATION_S holds a stream that sends nothing more too, not only its next frames: it
    could stay open up to the duration plus the idle timeout."""
    client = client_for(max_stream_duration_s=0.3, stream_idle_timeout_s=30)
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        ws.send_bytes(npy(np.zeros((models["mel"].n_features, 30), np.float32)))
        started = time.monotonic()
        error, code = error_of(ws)
    assert (error["status"], code) == (413, 4413) and "VOCOS_MAX_STREAM_DURATION_S" in error["message"]
    assert time.monotonic() - started < 5


def test_an_idle_stream_is_closed_with_408(client_for: Any) -> None:
    with client_for(stream_idle_timeout_s=0.2).websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        error, code = error_of(ws)
    assert (error["status"], code) == (408, 4408)


def test_a_client_that_leaves_mid_stream_frees_its_stream(client_for: Any, models: dict[str, ServedModel]) -> None:
    client = client_for()
    state = state_of(client.app)
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        ws.send_bytes(npy(np.zeros((models["mel"].n_features, 20), np.float32)))
        assert state.slots["mel"].engine.open_streams == 1
    client.get("/healthz")  # lets the server side see the disconnect
    metrics = client.get("/metrics").text
    assert state.slots["mel"].engine.open_streams == 0
    assert 'vocos_streams_total{model="mel",outcome="disconnected",transport="websocket"} 1.0' in metrics
    assert 'vocos_streams_active{model="mel"} 0.0' in metrics


def test_a_draining_server_refuses_new_streams(client_for: Any) -> None:
    client = client_for()
    state_of(client.app).draining = True
    with client.websocket_connect("/stream/mel") as ws:
        error, code = error_of(ws)
    assert (error["status"], code, error["retry_after"]) == (503, 4503, 1)


def test_a_stream_idle_at_the_drain_deadline_ends_with_503(client_for: Any) -> None:
    client = client_for(drain_timeout_s=0.3)
    with client.websocket_connect("/stream/mel") as ws:
        assert json.loads(ws.receive_text())["type"] == "start"
        client.portal.call(state_of(client.app).begin_drain)  # type: ignore[union-attr]
        error, code = error_of(ws)  # the client sends nothing: the deadline ends the wait
    assert (error["status"], error["error"], code) == (503, "unavailable", 4503)
    assert "VOCOS_DRAIN_TIMEOUT_S" in error["message"]


def test_stream_metrics_after_a_stream(client_for: Any, models: dict[str, ServedModel]) -> None:
    client = client_for()
    mel = np.zeros((models["mel"].n_features, 40), np.float32)
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        time.sleep(0.5)  # a stream opened before its TTS has frames: first audio counts from the first frames
        ws.send_bytes(npy(mel))
        ws.send_text(json.dumps({"type": "end"}))
        audio, _ = collect(ws, "<i2")
    metrics = client.get("/metrics").text
    assert 'vocos_streams_total{model="mel",outcome="ok",transport="websocket"} 1.0' in metrics
    first = next(m for m in metrics.splitlines() if m.startswith('vocos_stream_first_audio_seconds_sum{model="mel"}'))
    assert float(first.split()[-1]) < 0.4, first
    seconds = next(m for m in metrics.splitlines() if m.startswith('vocos_audio_seconds_total{model="mel"}'))
    assert float(seconds.split()[-1]) == pytest.approx(audio.size / 24000)  # stream audio counts, as made
    for name in ("vocos_stream_chunk_latency_seconds_count", "vocos_stream_first_audio_seconds_count",
                 "vocos_stream_realtime_factor_count", "vocos_stream_batch_size_count"):
        line = next(m for m in metrics.splitlines() if m.startswith(f'{name}{{model="mel"}}'))
        assert float(line.split()[-1]) >= 1, line


def test_a_stream_fed_slower_than_real_time_counts_one_underrun(client_for: Any,
                                                                 models: dict[str, ServedModel]) -> None:
    client = client_for()
    mel = np.zeros((models["mel"].n_features, 40), np.float32)  # 0.43 s of audio per push
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        for pause in (0.0, 0.0, 1.2, 1.2):  # real time at first, then a gap longer than the audio sent
            time.sleep(pause)
            ws.send_bytes(npy(mel))
            assert ws.receive_bytes()
        ws.send_text(json.dumps({"type": "end"}))
        collect(ws, "<i2")
    metrics = client.get("/metrics").text
    # the listener ran dry once (its buffer of a chunk and 0.1 s bridged the first gap, not the second; the end's
    # audio finds it still behind: the same underrun, not a new one)
    assert 'vocos_stream_underruns_total{model="mel"} 1.0' in metrics


def test_a_stream_fed_at_real_time_in_chunks_counts_no_underrun(client_for: Any,
                                                                models: dict[str, ServedModel]) -> None:
    """Its first audio is a chunk less the lookahead, so a listener with no buffer ran dry at the next chunk on
    every such stream (once; 22 times in a stream of 1-frame chunks): the metric's listener waits for a chunk
    first, and 0.1 s. Chunks of 20 frames leave the server 0.23 s of margin on the tiny model."""
    client = client_for()
    served = models["mel"]
    frame_s, chunk = served.model.hop_length / served.sample_rate, 20
    mel = np.random.default_rng(0).standard_normal((served.n_features, 6 * chunk)).astype(np.float32)
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        start = time.monotonic()
        for t in range(0, mel.shape[1], chunk):  # each chunk sent when its last frame is due, as a TTS makes them
            time.sleep(max(0.0, start + (t + chunk) * frame_s - time.monotonic()))
            ws.send_bytes(npy(mel[:, t:t + chunk]))
        ws.send_text(json.dumps({"type": "end"}))
        collect(ws, "<i2")
    underruns = [m for m in client.get("/metrics").text.splitlines() if m.startswith("vocos_stream_underruns_total")]
    assert 'vocos_stream_underruns_total{model="mel"} 0.0' in underruns, underruns


def test_a_refused_stream_mel_counts_as_an_input_warning(client_for: Any) -> None:
    client = client_for()
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        ws.send_bytes(npy(np.full((100, 5), -80.0, np.float32)))
        error, _ = error_of(ws)
    assert error["status"] == 422
    assert 'vocos_input_warnings_total{cause="db_scaled",model="mel"} 1.0' in client.get("/metrics").text

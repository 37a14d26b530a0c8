"""Metric names and the GPU memory collector (with the CUDA allocator calls stubbed on CPU hosts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from service_helpers import AppHarness

from service.engine import BatchStats
from service.runtime.metrics import ServiceMetrics
from service.testing import npy_bytes


def test_engine_observations_land_in_the_histograms() -> None:
    m = ServiceMetrics()
    m.on_batch("mel", BatchStats(size=4, real_frames=300, padded_frames=400, compute_s=0.02, ok=True))
    m.on_queue_wait("mel", 0.003)
    m.on_queue_depth("encodec", 7)
    text = m.render()[0].decode()
    assert 'vocos_batch_size_sum{model="mel"} 4.0' in text
    assert 'vocos_padding_ratio_sum{model="mel"} 1.3333333333333333' in text
    assert 'vocos_compute_seconds_count{model="mel"} 1.0' in text
    assert 'vocos_queue_wait_seconds_count{model="mel"} 1.0' in text
    assert 'vocos_queue_depth{model="encodec"} 7.0' in text


@pytest.mark.asyncio
async def test_warm_up_leaves_the_engine_histograms_empty(app: AppHarness) -> None:
    """Warm-up's calls (seconds each, oneDNN compiling kernels) would sit in the histograms' tails for good."""
    metrics = (await app.client.get("/metrics")).text
    assert 'vocos_compute_seconds_count{model="mel"} 0.0' in metrics
    assert 'vocos_batch_size_count{model="mel"} 0.0' in metrics
    assert (await app.client.post("/decode/mel", content=npy_bytes(np.zeros((100, 20), np.float32)))).status_code == 200
    assert 'vocos_batch_size_count{model="mel"} 1.0' in (await app.client.get("/metrics")).text


def test_every_per_model_series_exists_from_the_start() -> None:
    """An idle model is on the dashboard (its throughput 0, not absent), and rate() sees its first increment."""
    m = ServiceMetrics()
    m.set_model("tts22k", "mel", "local:tts22k", "cpu", "float32")
    text = m.render()[0].decode()
    for sample in ('vocos_audio_seconds_total{model="tts22k"} 0.0', 'vocos_queue_depth{model="tts22k"} 0.0',
                   'vocos_stream_underruns_total{model="tts22k"} 0.0',
                   'vocos_compute_seconds_count{model="tts22k"} 0.0',
                   'vocos_stream_first_audio_seconds_count{model="tts22k"} 0.0',
                   'vocos_streams_total{model="tts22k",outcome="ok",transport="websocket"} 0.0',
                   'vocos_streams_total{model="tts22k",outcome="disconnected",transport="http"} 0.0'):
        assert sample in text, sample


def test_the_alerted_status_series_of_every_endpoint_exist_from_the_start() -> None:
    """The 5xx and queue-full (429) alerts' rate() saw a failure counted on a series that first appeared with it
    as no increase."""
    text = ServiceMetrics().render()[0].decode()
    for endpoint in ("/decode/mel", "/decode/encodec", "/resynthesize"):
        for status in ("429", "500", "503", "504"):
            assert f'vocos_requests_total{{endpoint="{endpoint}",status="{status}"}} 0.0' in text
    assert 'status="200"' not in text  # nothing else made up


def test_the_latency_leaves_out_requests_the_client_made_slow_or_left() -> None:
    """A body sent too slowly (408, after VOCOS_BODY_TIMEOUT_S) or an answer not read (499) would put the
    client's time in the p99 the latency alert watches; they are counted, not timed."""
    m = ServiceMetrics()
    for status, seconds in ((200, 0.1), (408, 30.0), (499, 30.0), (504, 30.0)):
        m.observe_request("/decode/mel", status, seconds)
    text = m.render()[0].decode()
    assert 'vocos_request_duration_seconds_count{endpoint="/decode/mel"} 2.0' in text  # 200 and 504
    assert 'vocos_requests_total{endpoint="/decode/mel",status="408"} 1.0' in text


def test_device_memory_is_read_at_scrape_time(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = {"allocated": 1000, "reserved": 4096}
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: readings["allocated"])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: readings["reserved"])
    m = ServiceMetrics()
    m.watch_devices(["cpu", "cuda:0", "cuda:0"])
    text = m.render()[0].decode()
    assert 'vocos_device_memory_bytes{device="cuda:0",kind="allocated"} 1000.0' in text
    assert 'vocos_device_memory_bytes{device="cuda:0",kind="reserved"} 4096.0' in text
    readings["allocated"] = 2000
    assert 'kind="allocated"} 2000.0' in m.render()[0].decode()


def test_two_apps_do_not_share_a_registry() -> None:
    a, b = ServiceMetrics(), ServiceMetrics()
    a.add_audio("mel", 2.5)
    assert 'vocos_audio_seconds_total{model="mel"} 2.5' in a.render()[0].decode()
    assert 'vocos_audio_seconds_total{model="mel"}' not in b.render()[0].decode()

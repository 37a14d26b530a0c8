"""Prometheus metrics of the service, all in the ``vocos_`` namespace, on a registry owned by one app.

A per-app ``CollectorRegistry`` (not the global default) lets tests build many apps in one process.
``ServiceMetrics`` also implements the engine's observer protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.engine import BatchStats, StreamStats

ENDPOINTS = ("/decode/mel", "/decode/encodec", "/resynthesize")
# The labels of vocos_streams_total: how a stream came (a WebSocket, or an HTTP answer with ?stream=true) and
# how it ended.
STREAM_TRANSPORTS = ("websocket", "http")
STREAM_OUTCOMES = ("ok", "error", "disconnected")
STREAM_ENDPOINTS = ("/stream/mel", "/stream/encodec")
# Statuses whose time is the client's: a body sent too slowly (408), an answer not read or left (499).
CLIENT_TIMED = frozenset({408, 499})
# Statuses whose series exist from the start, at 0: rate() and increase() see a series' first sample as its
# start, so a failure counted on a series that first appears with it would move no alert. The 5xx of the 5xx
# alert, and 429 (a queue full) of the queue-full alert.
SERVER_FAILURES = (500, 503, 504)
ALERTED_STATUSES = (429, *SERVER_FAILURES)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_PADDING_BUCKETS = (1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
_CHUNK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# Around an exact stream's lookahead (309 ms for the official mel model) finely, where first audio falls.
_FIRST_AUDIO_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.75, 1.0, 1.5, 2.5, 5.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)


class ServiceMetrics:
    """Every metric of the service (names fixed by the deployment's dashboards and alerts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._add_request_metrics(self.registry)
        self._add_engine_metrics(self.registry)
        self._add_stream_metrics(self.registry)
        self.ready = Gauge("vocos_ready", "1 when ready to serve, 0 while starting, draining or with a batching loop "
                           "stopped (as /readyz).",
                           registry=self.registry)
        for endpoint in ENDPOINTS:
            self.request_duration.labels(endpoint)
            for status in ALERTED_STATUSES:
                self.requests.labels(endpoint, str(status))

    def _add_request_metrics(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "vocos_requests", "Requests by endpoint and status code.", ["endpoint", "status"], registry=r
        )
        self.request_duration = Histogram(
            "vocos_request_duration_seconds",
            "Request latency, from the end of its body (a slow upload is the client's time) to the last byte of the "
            "response handed to the connection, so a client that reads a long answer slowly adds its download (queue "
            "wait and compute have histograms of their own); not of requests the client made slow or left (408, 499).",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("vocos_inflight_requests", "Decoding requests being handled.", registry=r)
        self.connections_refused = Counter(
            "vocos_connections_refused", "Connections answered 503 before their request was read: beyond "
            "VOCOS_MAX_CONNECTIONS and the headroom kept for probes and scrapes.", registry=r
        )
        self.audio_seconds = Counter(
            "vocos_audio_seconds", "Seconds of audio the model made for answers and streams, as made (the work "
            "done: a client that leaves before reading its answer counts too; a call that its client left, or whose "
            "deadline passed, while its batch ran does not, though the batch's compute time counts).", ["model"],
            registry=r,
        )
        self.input_warnings = Counter(
            "vocos_input_warnings", "Mels that look like another front-end's (warned) or that the model's "
            "front-end cannot produce (refused), by model and likely cause.", ["model", "cause"], registry=r
        )

    def _add_engine_metrics(self, r: CollectorRegistry) -> None:
        self.queue_wait = Histogram(
            "vocos_queue_wait_seconds",
            "Time a request waited before its batch ran.",
            ["model"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "vocos_compute_seconds", "Model time per call: whole-utterance batches and batched stream steps "
            "(including the steps of long requests decoded in chunks while streams are open).", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "vocos_batch_size", "Requests per batch.", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.padding = Histogram(
            "vocos_padding_ratio",
            "Padded frames / real frames per batch (>= 1).",
            ["model"],
            buckets=_PADDING_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("vocos_queue_depth", "Requests waiting for a batch.", ["model"], registry=r)
        self.model_info = Gauge(
            "vocos_model_info", "Served models (value 1); cpu_matmul: how float32 matmuls run on CPU "
            "(vocos_core.matmul_ways), none on a GPU or for a bfloat16/float16 model.",
            ["model", "kind", "source", "device", "dtype", "cpu_matmul"],
            registry=r
        )

    def _add_stream_metrics(self, r: CollectorRegistry) -> None:
        self.streams_active = Gauge("vocos_streams_active", "Open streams.", ["model"], registry=r)
        self.streams_low_latency = Gauge(
            "vocos_streams_low_latency_active", "Open low-latency streams (lookahead_frames below the model's; "
            "also counted in vocos_streams_active), each costing more compute than an exact one.", ["model"],
            registry=r,
        )
        self.streams = Counter("vocos_streams", "Streams ended, by transport and outcome.",
                               ["model", "transport", "outcome"], registry=r)
        self.streams_refused = Counter(
            "vocos_streams_refused", "WebSocket streams refused before they began, by endpoint and status (401, "
            "403 for a page's origin, 404, 422; 503 at VOCOS_MAX_STREAMS or in a drain).", ["endpoint", "status"],
            registry=r)
        for endpoint in STREAM_ENDPOINTS:  # so that rate() sees the first refusal at the limit
            self.streams_refused.labels(endpoint, "503")
        self.stream_chunk_latency = Histogram(
            "vocos_stream_chunk_latency_seconds",
            "Time from a stream chunk's frames arriving to the audio they let out leaving.",
            ["model"], buckets=_CHUNK_BUCKETS, registry=r,
        )
        self.stream_first_audio = Histogram(
            "vocos_stream_first_audio_seconds",
            "Time from a stream's first frames arriving to its first audio leaving.",
            ["model"], buckets=_FIRST_AUDIO_BUCKETS, registry=r,
        )
        self.stream_underruns = Counter(
            "vocos_stream_underruns", "Times a stream's audio fell behind real time: a listener playing it from its "
            "first sample, after a buffer of its longest chunk plus 100 ms, would have run out.", ["model"], registry=r,
        )
        self.stream_rtf = Histogram(
            "vocos_stream_realtime_factor", "Per ended stream: server seconds spent on its chunks / seconds of "
            "its audio (below 1 is faster than real time).", ["model"], buckets=_RTF_BUCKETS, registry=r,
        )
        self.stream_batch = Histogram(
            "vocos_stream_batch_size", "Streams per batched stream step.", ["model"], buckets=_BATCH_BUCKETS,
            registry=r,
        )

    # -- engine observer ---------------------------------------------------------------------------

    def on_queue_depth(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)

    def on_queue_wait(self, model: str, seconds: float) -> None:
        self.queue_wait.labels(model).observe(seconds)

    def on_batch(self, model: str, stats: BatchStats) -> None:
        self.compute.labels(model).observe(stats.compute_s)
        self.batch_size.labels(model).observe(stats.size)
        self.padding.labels(model).observe(stats.padded_frames / max(1, stats.real_frames))

    def on_stream_batch(self, model: str, stats: StreamStats) -> None:
        self.compute.labels(model).observe(stats.compute_s)
        self.stream_batch.labels(model).observe(stats.streams)

    # -- app ---------------------------------------------------------------------------------------

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        # Those last as long as the client makes them: the latency alert is for the server's own time.
        if status not in CLIENT_TIMED:
            self.request_duration.labels(endpoint).observe(seconds)

    def add_audio(self, model: str, seconds: float) -> None:
        self.audio_seconds.labels(model).inc(seconds)

    def set_model(self, model: str, kind: str, source: str, device: str, dtype: str,
                  cpu_matmul: str | None = None) -> None:
        """Announce a served model by name: every per-model series starts at 0, so dashboards see every model
        before its first request and ``rate()`` sees its first increment."""
        self.model_info.labels(model, kind, source, device, dtype, cpu_matmul or "none").set(1)
        for metric in (self.queue_depth, self.streams_active, self.streams_low_latency, self.audio_seconds,
                       self.queue_wait, self.compute, self.batch_size, self.padding, self.stream_chunk_latency,
                       self.stream_first_audio, self.stream_underruns, self.stream_rtf, self.stream_batch):
            metric.labels(model)
        for transport in STREAM_TRANSPORTS:
            for outcome in STREAM_OUTCOMES:
                self.streams.labels(model, transport, outcome)

    def input_warning(self, model: str, cause: str) -> None:
        self.input_warnings.labels(model, cause).inc()

    def report_readiness(self, ready: Callable[[], bool]) -> None:
        """vocos_ready is ``ready()`` at each scrape, so it cannot fall out of step with /readyz."""
        self.ready.set_function(lambda: 1.0 if ready() else 0.0)

    def watch_devices(self, devices: Iterable[str]) -> None:
        """Report allocated/reserved memory of these CUDA devices at each scrape (CPU devices ignored)."""
        cuda = sorted({d for d in devices if d.startswith("cuda")})
        if cuda:
            self.registry.register(_DeviceMemoryCollector(cuda))

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _DeviceMemoryCollector(Collector):
    """``vocos_device_memory_bytes{device,kind}``, read from the CUDA caching allocator at scrape time."""

    def __init__(self, devices: list[str]) -> None:
        self._devices = devices

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "vocos_device_memory_bytes", "GPU memory of the CUDA allocator.", labels=["device", "kind"]
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "vocos_device_memory_bytes", "GPU memory of the CUDA allocator.", labels=["device", "kind"]
        )
        for device in self._devices:
            family.add_metric([device, "allocated"], float(torch.cuda.memory_allocated(device)))
            family.add_metric([device, "reserved"], float(torch.cuda.memory_reserved(device)))
        yield family

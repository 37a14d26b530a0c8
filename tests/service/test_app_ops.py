"""Operations through the ASGI app: probes, warm-up, drain, overload (429), deadlines (504),
disconnects, authentication and metrics."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_helpers import AppFactory, GatedModel, running_app, tone, wait_until

from service.http.pages import PAGE_PATHS
from service.runtime.models import ServedModel
from service.settings import Settings
from service.testing import audio_file, npy_bytes

pytestmark = pytest.mark.asyncio

NPY = {"content-type": "application/x-npy"}


def mel_npy(frames: int) -> bytes:
    return npy_bytes(np.random.default_rng(frames).standard_normal((100, frames)).astype(np.float32))


async def test_readiness_waits_for_warm_up_while_liveness_answers(
    base_settings: Settings, models: dict[str, ServedModel]
) -> None:
    gated = GatedModel(models["mel"])
    gated.gate.clear()  # warm-up blocks inside the model call
    async with running_app(base_settings, {"mel": gated}, wait_ready=False) as h:
        await wait_until(gated.entered.is_set)
        started = time.monotonic()
        live = await h.client.get("/healthz")
        assert live.status_code == 200 and time.monotonic() - started < 1.0  # a batch is computing meanwhile
        not_ready = await h.client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["error"]["message"] == "models are warming up"
        assert "vocos_ready 0.0" in (await h.client.get("/metrics")).text
        gated.gate.set()
        await wait_until(lambda: h.state.ready)
        ready = await h.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["models"] == {"mel": gated.public_name}
        assert "vocos_ready 1.0" in (await h.client.get("/metrics")).text


async def test_a_queue_of_one_request_still_warms_up_every_bandwidth(make_app: AppFactory) -> None:
    # warm-up used to queue one call per EnCodec bandwidth at once: with room for fewer, never ready
    async with make_app(max_queue_size=1) as h:
        assert h.state.ready and (await h.client.get("/readyz")).status_code == 200
        assert len(h.state.slots["encodec"].served.codebooks) == 4


async def test_drain_finishes_queued_requests_and_refuses_new_ones(
    make_app: AppFactory, models: dict[str, ServedModel]
) -> None:
    gated = GatedModel(models["mel"])
    async with make_app(models_override={"mel": gated}, max_batch_size=1, max_wait_ms=0) as h:
        gated.gate.clear()
        queued = [asyncio.ensure_future(h.client.post("/decode/mel", content=mel_npy(10 + i), headers=NPY))
                  for i in range(3)]
        await wait_until(lambda: h.state.slots["mel"].engine.queue_depth == 2)
        h.state.begin_drain()
        readiness = await h.client.get("/readyz")
        assert readiness.status_code == 503 and "draining" in readiness.json()["error"]["message"]
        refused = await h.client.post("/decode/mel", content=mel_npy(9), headers=NPY)
        assert refused.status_code == 503 and refused.json()["error"]["type"] == "unavailable"
        assert refused.headers["retry-after"] == "1"  # a retry goes to another replica
        assert (await h.client.get("/healthz")).status_code == 200
        gated.gate.set()
        assert [r.status_code for r in await asyncio.gather(*queued)] == [200, 200, 200]


async def test_queue_full_is_429_with_retry_after(make_app: AppFactory, models: dict[str, ServedModel]) -> None:
    gated = GatedModel(models["mel"])
    async with make_app(models_override={"mel": gated}, max_batch_size=1, max_queue_size=2, max_wait_ms=0) as h:
        gated.gate.clear()
        gated.entered.clear()
        first = asyncio.ensure_future(h.client.post("/decode/mel", content=mel_npy(10), headers=NPY))
        await wait_until(gated.entered.is_set)
        waiting = [asyncio.ensure_future(h.client.post("/decode/mel", content=mel_npy(11), headers=NPY))
                   for _ in range(2)]
        await wait_until(lambda: h.state.slots["mel"].engine.queue_depth == 2)
        response = await h.client.post("/decode/mel", content=mel_npy(12), headers=NPY)
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "queue_full"
        assert "(VOCOS_MAX_QUEUE_SIZE, or the model's max_queue_size" in response.json()["error"]["message"]
        assert int(response.headers["retry-after"]) >= 1
        gated.gate.set()
        assert [r.status_code for r in await asyncio.gather(first, *waiting)] == [200, 200, 200]


@pytest.mark.parametrize(("setting", "header"), [(30.0, {"x-request-timeout": "0.2"}), (0.2, {})])
async def test_deadline_is_504_and_frees_the_slot(
    make_app: AppFactory, models: dict[str, ServedModel], setting: float, header: dict[str, str]
) -> None:
    gated = GatedModel(models["mel"])
    async with make_app(models_override={"mel": gated}, max_batch_size=1, max_wait_ms=0,
                        request_timeout_s=setting) as h:
        gated.gate.clear()
        gated.entered.clear()
        gated.calls.clear()
        blocker = asyncio.ensure_future(h.client.post("/decode/mel", content=mel_npy(10), headers=NPY,
                                                      timeout=30))
        await wait_until(gated.entered.is_set)
        late = await h.client.post("/decode/mel", content=mel_npy(17), headers={**NPY, **header})
        assert late.status_code == 504
        assert "deadline passed after" in late.json()["error"]["message"]
        assert "X-Request-Timeout" in late.json()["error"]["message"]
        assert h.state.slots["mel"].engine.queue_depth == 0
        gated.gate.set()
        await blocker
        assert [17] not in gated.calls


async def test_a_client_that_disconnects_while_queued_is_dropped(
    make_app: AppFactory, models: dict[str, ServedModel]
) -> None:
    gated = GatedModel(models["mel"])
    async with make_app(models_override={"mel": gated}, max_batch_size=1, max_wait_ms=0) as h:
        gated.gate.clear()
        gated.entered.clear()
        gated.calls.clear()
        blocker = asyncio.ensure_future(h.client.post("/decode/mel", content=mel_npy(10), headers=NPY))
        await wait_until(gated.entered.is_set)
        disconnect = asyncio.Event()
        messages: list[dict[str, Any]] = [{"type": "http.request", "body": mel_npy(23), "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/decode/mel", "raw_path": b"/decode/mel", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"application/x-npy"), (b"host", b"test")],
                 "client": ("127.0.0.1", 5000), "server": ("test", 80)}
        call = asyncio.ensure_future(h.app(scope, receive, send))
        await wait_until(lambda: h.state.slots["mel"].engine.queue_depth == 1)
        disconnect.set()
        await asyncio.wait_for(call, 5)
        assert h.state.slots["mel"].engine.queue_depth == 0
        gated.gate.set()
        assert (await blocker).status_code == 200
        assert [23] not in gated.calls  # never computed
        metrics = (await h.client.get("/metrics")).text
        assert 'vocos_requests_total{endpoint="/decode/mel",status="499"} 1.0' in metrics


async def test_bearer_keys_guard_everything_but_the_probes(make_app: AppFactory) -> None:
    body = {"mel": np.zeros((100, 5)).tolist()}
    async with make_app(api_keys="alpha,beta") as h:
        c = h.client
        missing = await c.post("/decode/mel", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "missing bearer token" in missing.json()["error"]["message"]
        wrong = await c.post("/decode/mel", json=body, headers={"authorization": "Bearer gamma"})
        assert wrong.status_code == 401 and "invalid API key" in wrong.json()["error"]["message"]
        basic = await c.post("/decode/mel", json=body, headers={"authorization": "Basic YWxwaGE="})
        assert basic.status_code == 401
        for key in ("alpha", "beta"):
            ok = await c.post("/decode/mel", json=body, headers={"authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        assert (await c.get("/openapi.json")).status_code == 401
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await c.get(path)).status_code == 200, path
        # HEAD wherever GET is served, as load balancers' checks and caches send it: the status, no body
        for path in ("/healthz", "/readyz", "/metrics", "/", "/docs", "/redoc", *sorted(PAGE_PATHS)):
            head = await c.head(path)
            assert (head.status_code, head.content) == (200, b""), path
        assert (await c.head("/models")).status_code == 401  # behind the keys, as its GET
        head = await c.head("/models", headers={"authorization": "Bearer alpha"})
        assert (head.status_code, head.content) == (200, b"")
        assert 'vocos_requests_total{endpoint="/decode/mel",status="401"} 3.0' in (await c.get("/metrics")).text
    async with make_app(api_keys="alpha", metrics_require_key=True) as h:
        assert (await h.client.get("/metrics")).status_code == 401
        assert (await h.client.get("/metrics", headers={"authorization": "Bearer alpha"})).status_code == 200
        assert (await h.client.get("/healthz")).status_code == 200


async def test_a_slow_upload_is_not_counted_in_the_latency(app: Any) -> None:
    """The latency histogram ran from the headers: a client's 1.5 s upload counted as the server's time."""
    body = mel_npy(20)

    async def slowly() -> AsyncIterator[bytes]:
        for start in range(0, len(body), len(body) // 3):
            yield body[start:start + len(body) // 3]
            await asyncio.sleep(0.5)

    response = await app.client.post("/decode/mel", content=slowly(), headers=NPY)
    assert response.status_code == 200
    text = (await app.client.get("/metrics")).text
    prefix = 'vocos_request_duration_seconds_sum{endpoint="/decode/mel"}'
    total = next(line for line in text.splitlines() if line.startswith(prefix))
    assert float(total.split()[-1]) < 1.0, total


async def test_metrics_expose_every_contract_name(app: Any) -> None:
    c = app.client
    await asyncio.gather(*(c.post("/decode/mel", content=mel_npy(20 + i), headers=NPY) for i in range(3)))
    await c.post("/decode/encodec", json={"codes": np.zeros((2, 10), int).tolist()})
    await c.post("/decode/mel", json={"mel": [[1.0]]})
    text = (await c.get("/metrics")).text
    for line in (
        'vocos_requests_total{endpoint="/decode/mel",status="200"} 3.0',
        'vocos_requests_total{endpoint="/decode/mel",status="422"} 1.0',
        'vocos_requests_total{endpoint="/decode/encodec",status="200"} 1.0',
        'vocos_request_duration_seconds_count{endpoint="/decode/mel"} 4.0',
        'vocos_queue_depth{model="mel"} 0.0',
        "vocos_inflight_requests 0.0",
        "vocos_ready 1.0",
        f'vocos_model_info{{cpu_matmul="{app.state.models["mel"].cpu_matmul}",device="cpu",dtype="float32",kind="mel",'
        'model="mel",source=',
    ):
        assert line in text, line
    for name in ("vocos_queue_wait_seconds_bucket", "vocos_compute_seconds_bucket", "vocos_batch_size_bucket",
                 "vocos_padding_ratio_bucket", 'vocos_audio_seconds_total{model="mel"}',
                 'vocos_audio_seconds_total{model="encodec"}'):
        assert name in text, name
    assert "vocos_device_memory_bytes" not in text  # CPU only
    prefix = 'vocos_audio_seconds_total{model="mel"}'
    audio = float(next(line for line in text.splitlines() if line.startswith(prefix)).split()[-1])
    assert audio == pytest.approx(sum((20 + i - 1) * 256 for i in range(3)) / 24000, rel=1e-6)


@pytest.mark.parametrize("probe", ["/healthz", "/readyz"])
async def test_liveness_and_readiness_fail_when_a_batching_loop_died(app: Any, probe: str) -> None:
    """Every request to the replica now gets 503: restarted (liveness), and out of the load balancer until
    then (readiness, which stayed 200)."""
    assert (await app.client.get(probe)).status_code == 200
    task = app.state.slots["mel"].engine._task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    response = await app.client.get(probe)
    assert response.status_code == 503 and "batching loop has stopped" in response.json()["error"]["message"]
    # The VocosNotReady alert and the dashboard's ready replicas read this gauge; it stayed 1.
    assert "vocos_ready 0.0" in (await app.client.get("/metrics")).text


async def test_clients_see_no_server_paths_nor_object_addresses(
    app: Any, mel_checkpoint: Path, encodec_checkpoint: Path
) -> None:
    c = app.client
    wav = audio_file(tone(0.2, 24000), 24000)
    responses = [
        await c.get("/readyz"),
        await c.get("/metrics"),
        await c.post("/decode/mel", content=mel_npy(10), headers=NPY),
        await c.post("/resynthesize?model=encodec&bandwidth_id=0", content=wav, headers={"content-type": "audio/wav"}),
        await c.post("/resynthesize", content=b"RIFF....WAVEjunkjunk", headers={"content-type": "audio/wav"}),
        await c.post("/resynthesize", content=b"\0" * 100, headers={"content-type": "audio/flac"}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 400, 400]
    assert responses[0].json()["models"] == {"mel": f"local:{mel_checkpoint.name}",
                                             "encodec": f"local:{encodec_checkpoint.name}"}
    assert responses[2].headers["x-model-source"] == f"local:{mel_checkpoint.name}"
    assert f'source="local:{mel_checkpoint.name}"' in responses[1].text
    assert "Format not recognised" in responses[5].json()["error"]["message"]
    for response in responses:
        seen = " ".join(f"{k}: {v}" for k, v in response.headers.items()) + " " + response.content.decode("latin-1")
        assert str(mel_checkpoint.parent) not in seen and str(encodec_checkpoint.parent) not in seen
        assert not re.search(r"0x[0-9a-fA-F]{6,}", seen), seen[:500]



async def test_a_failed_warm_up_does_not_tell_clients_the_exception_text(
    base_settings: Settings, models: dict[str, ServedModel]
) -> None:
    gated = GatedModel(models["mel"])
    gated.fail_with = RuntimeError("cannot open /srv/secret/models/mel/pytorch_model.bin")
    async with running_app(base_settings, {"mel": gated}, wait_ready=False) as h:
        await wait_until(lambda: h.state.not_ready_reason.startswith("warm-up failed"))
        response = await h.client.get("/readyz")
    assert response.status_code == 503
    assert "/srv/secret" not in response.text
    assert response.json()["error"]["message"].startswith("warm-up failed (BatchFailedError)")


@pytest.mark.parametrize("path", ["/decode/mel", "/decode/encodec"])
async def test_the_openapi_documents_bodies_that_decode_as_they_are(app: Any, path: str) -> None:
    """/docs' "Try it out" sends a body's example as it is: the one it made from the schema, {"mel": [[0]]},
    was refused with 422 on a first-time user's first call."""
    document = (await app.client.get("/openapi.json")).json()
    example = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
    answer = await app.client.post(path, json=example)
    assert answer.status_code == 200, answer.text
    assert "x-input-warning" not in answer.headers


@pytest.mark.parametrize("path", ["/models", "/models?model=mel", "/healthz", "/readyz"])
async def test_the_openapi_document_gives_the_json_answers_their_schema(app: Any, path: str) -> None:
    """/models, /healthz and /readyz were documented as answering ``{}`` (any JSON): a Go or TypeScript client
    generated from /openapi.json got an untyped value. Each answer now has a schema, and the answer meets it."""
    import jsonschema  # schemathesis's (the fuzz tests'), pinned in constraints.txt

    document = (await app.client.get("/openapi.json")).json()
    schema = document["paths"][path.split("?")[0]]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    answer = await app.client.get(path)
    assert answer.status_code == 200, answer.text
    assert schema.get("required"), schema
    jsonschema.validate(answer.json(), {**schema, "additionalProperties": False})
    if path.startswith("/models"):
        item = schema["properties"]["models"]["items"]
        for model in answer.json()["models"]:
            jsonschema.validate(model, {**item, "additionalProperties": False})
            assert set(model) == set(item["required"])

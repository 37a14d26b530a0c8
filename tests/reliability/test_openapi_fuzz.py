"""Schema-driven fuzzing: schemathesis reads the app's own OpenAPI document and sends every operation
schema-valid and schema-violating requests (bodies, query parameters, methods). No answer may be a
5xx, take longer than the time limit, or stray from what the document declares (status codes,
content types, headers)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.http.app import create_app
from service.http.state import state_of
from service.runtime.models import ServedModel
from service.settings import Settings

TIME_LIMIT_S = 20.0


@pytest.fixture(scope="module")
def api_schema(base_settings: Settings, models: dict[str, ServedModel]) -> Iterator[object]:
    """The OpenAPI schema of a started app (schemathesis runs its lifespan and calls it in process)."""
    app = create_app(base_settings, models)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    state = state_of(app)
    deadline = time.monotonic() + 60
    while not state.ready:  # the warm-up runs in the lifespan's own thread; /readyz answers 503 until then
        assert time.monotonic() < deadline, "the app did not become ready"
        time.sleep(0.02)
    yield loaded
    asgi.shutdown_lifespans()  # drains the app's engines


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every CI run
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented_and_never_5xx(case: schemathesis.Case) -> None:
    response = case.call(timeout=TIME_LIMIT_S)  # a hang fails here as a read timeout
    # All default checks (no 5xx, documented status codes, content types and headers, schema-violating
    # input refused) except accepting every schema-valid body: a JSON schema cannot say that a mel
    # needs exactly 100 rows or that K must be 2, 4, 8 or 16, so valid-looking grids are rightly 422.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])

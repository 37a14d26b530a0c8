"""The OpenAPI document as served: FastAPI's, plus, when API keys are configured, an HTTP bearer
security scheme on every operation that needs a key. Swagger UI then offers "Authorize" and sends
the key with "Try it out"; client generators learn where the header goes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.http.middleware import requires_key
from service.http.route_docs import UNAUTHORIZED
from service.settings import Settings

SCHEME = "bearer"
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def declare_bearer_auth(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` declare the bearer scheme (nothing changes when no keys are configured)."""
    if not settings.api_key_list:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_bearer_scheme(build(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_bearer_scheme(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``schema`` with the scheme declared, required by default, and waived on the public operations."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "One of the server's API keys (`VOCOS_API_KEYS`), sent as `Authorization: Bearer <key>`",
    }
    schema["security"] = [{SCHEME: []}]
    for path, item in schema.get("paths", {}).items():
        keyed = requires_key(path, settings)
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            if not keyed:
                operation["security"] = []
            else:  # every operation behind the keys can answer 401, not only those that declare it
                operation.setdefault("responses", {}).setdefault("401", UNAUTHORIZED)
    return schema

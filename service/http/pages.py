"""The browser pages: the playground at ``/``, the API documentation at ``/docs`` (Swagger UI) and
``/redoc``, and their static assets, all served from installed packages so that they work offline.

The pages and assets are public even when API keys are configured: they are the same files on every
server and name no route of its configuration. The OpenAPI document and every API call still need a
key, which the pages ask for and keep in the tab's sessionStorage (``static/docs.js``,
``static/playground.js``).

Every URL in the pages is relative, so they also work behind a proxy that mounts the service under
a prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Swagger UI and ReDoc builds as published on npm, shipped by the fastapi-offline wheel.
VENDOR_DIR = Path(str(files("fastapi_offline") / "static"))
STATIC_PREFIX = "/static/"
OPENAPI_URL = "openapi.json"

_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"


@dataclass(frozen=True)
class Asset:
    file: Path
    media_type: str
    # (text, replacement) pairs applied to the file before it is served
    patches: tuple[tuple[str, str], ...] = ()

    def patched(self) -> bytes:
        """The file with its patches applied; one whose text is not there (another vendor version) is skipped,
        as the page works without it (tests/service/test_pages.py holds the pinned version to it)."""
        text = self.file.read_text(encoding="utf-8")
        for old, new in self.patches:
            text = text.replace(old, new)
        return text.encode()


# ReDoc's menu footer always shows Redocly's logo from their CDN: a request to another host from
# every load (offline, a console error as the CSP refuses it). An empty local SVG stands in for it.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
_EMPTY_SVG = "data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27 width=%270%27 height=%270%27/%3E"


ASSETS: dict[str, Asset] = {
    "playground.js": Asset(STATIC_DIR / "playground.js", _JS),
    "playground.css": Asset(STATIC_DIR / "playground.css", _CSS),
    "docs.js": Asset(STATIC_DIR / "docs.js", _JS),
    "docs.css": Asset(STATIC_DIR / "docs.css", _CSS),
    "swagger-ui-bundle.js": Asset(VENDOR_DIR / "swagger-ui-bundle.js", _JS),
    "swagger-ui.css": Asset(VENDOR_DIR / "swagger-ui.css", _CSS),
    "redoc.standalone.js": Asset(VENDOR_DIR / "redoc.standalone.js", _JS, patches=((REDOC_LOGO, _EMPTY_SVG),)),
    "favicon.png": Asset(VENDOR_DIR / "favicon.png", "image/png"),
}
PAGES = ("/", "/docs", "/redoc")
# Every path this module answers; the authentication middleware lets exactly these through.
PAGE_PATHS = frozenset({*PAGES, *(STATIC_PREFIX + name for name in ASSETS)})

# The browser itself refuses anything from another origin. Swagger UI's page has an inline
# bootstrap script and both documentation UIs set inline styles; ReDoc runs its search in a blob: worker.
_CSP_PLAYGROUND = (
    "default-src 'self'; media-src 'self' blob:; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_CSP_DOCS = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_REVALIDATE = {"Cache-Control": "no-cache"}

# HEAD wherever GET is served (HTTP asks for it; link checkers and caches use it).
router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def playground() -> Response:
    return FileResponse(
        STATIC_DIR / "playground.html",
        media_type="text/html; charset=utf-8",
        headers={**_REVALIDATE, "Content-Security-Policy": _CSP_PLAYGROUND},
    )


@router.api_route("/docs", methods=["GET", "HEAD"])
async def swagger_ui() -> HTMLResponse:
    return HTMLResponse(_SWAGGER_HTML, headers={**_REVALIDATE, "Content-Security-Policy": _CSP_DOCS})


@router.api_route("/redoc", methods=["GET", "HEAD"])
async def redoc() -> HTMLResponse:
    return HTMLResponse(_REDOC_HTML, headers={**_REVALIDATE, "Content-Security-Policy": _CSP_DOCS})


def _asset_endpoint(asset: Asset) -> Callable[[], Coroutine[Any, Any, Response]]:
    if asset.patches:
        content = asset.patched()  # once, at import

        async def serve_patched() -> Response:
            return Response(content, media_type=asset.media_type, headers=_REVALIDATE)

        return serve_patched

    async def serve() -> Response:
        # Revalidated on each load (ETag), so an upgraded server never runs a stale page script.
        return FileResponse(asset.file, media_type=asset.media_type, headers=_REVALIDATE)

    return serve


for _name, _asset in ASSETS.items():
    router.add_api_route(STATIC_PREFIX + _name, _asset_endpoint(_asset), methods=["GET", "HEAD"],
                         name=f"static {_name}")


def _static(name: str) -> str:
    return STATIC_PREFIX.lstrip("/") + name


def _swagger_html() -> str:
    """FastAPI's Swagger UI page on the local assets, with ``docs.js`` loaded between the bundle and
    the page's bootstrap script, where it adds the API key to every request Swagger UI sends."""
    bundle = _static("swagger-ui-bundle.js")
    page = get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title="vocos-serve - API documentation",
        swagger_js_url=bundle,
        swagger_css_url=_static("swagger-ui.css"),
        swagger_favicon_url=_static("favicon.png"),
        oauth2_redirect_url=None,
        # validatorUrl: Swagger UI would otherwise show a badge fetched from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True},
    )
    html = bytes(page.body).decode()
    bundle_tag = f'<script src="{bundle}"></script>'
    if bundle_tag not in html:
        raise RuntimeError("FastAPI's Swagger UI page changed: no bundle <script> tag to load docs.js after")
    extras = f'<link rel="stylesheet" href="{_static("docs.css")}"><script src="{_static("docs.js")}"></script>'
    return html.replace(bundle_tag, bundle_tag + extras, 1)


# FastAPI's get_redoc_html lets ReDoc fetch the document itself, which cannot carry an API key;
# docs.js fetches it (with the key when one is set) and hands it to Redoc.init.
_REDOC_HTML = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vocos-serve - API reference</title>
<link rel="shortcut icon" href="{_static("favicon.png")}">
<link rel="stylesheet" href="{_static("docs.css")}">
</head>
<body>
<div id="redoc" data-openapi-url="{OPENAPI_URL}"></div>
<script src="{_static("redoc.standalone.js")}"></script>
<script src="{_static("docs.js")}"></script>
</body>
</html>
"""
_SWAGGER_HTML = _swagger_html()

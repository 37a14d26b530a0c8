"""The browser pages in process: the playground, Swagger UI and ReDoc answer with their assets from
installed files, load nothing from another origin, are public with API keys while the OpenAPI
document is not, and the document declares the bearer scheme exactly when keys are configured.
(What a browser makes of them: test_browser.py.)"""

from __future__ import annotations

import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from service_helpers import AppFactory

from service.http.pages import ASSETS, PAGE_PATHS, PAGES, STATIC_DIR, STATIC_PREFIX

KEY = "page-test-key-51c0"
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
REPO = Path(__file__).resolve().parents[2]


class _References(HTMLParser):
    """Every URL a page loads or links to: script src, link href, img/audio src, a href."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append((tag, value))
        if tag == "script":
            self.scripts.append(dict(attrs).get("src") or "inline")


def references(html: str) -> _References:
    parser = _References()
    parser.feed(html)
    return parser


@pytest.mark.asyncio
async def test_pages_and_assets_answer_with_their_content_types(make_app: AppFactory) -> None:
    async with make_app() as app:
        for page in PAGES:
            response = await app.client.get(page)
            assert response.status_code == 200, page
            assert response.headers["content-type"] == "text/html; charset=utf-8", page
            assert "default-src 'self'" in response.headers["content-security-policy"], page
        for name, asset in ASSETS.items():
            response = await app.client.get(STATIC_PREFIX + name)
            assert response.status_code == 200, name
            assert response.headers["content-type"] == asset.media_type, name
            served = asset.patched() if asset.patches else asset.file.read_bytes()
            assert response.content == served and response.content, name
        missing = await app.client.get(STATIC_PREFIX + "nowhere.js")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "http_error"


@pytest.mark.asyncio
async def test_pages_load_nothing_from_another_origin(make_app: AppFactory) -> None:
    """Every script, stylesheet, icon and link of the pages is a relative URL to this server (so the
    pages also work under a path prefix), and the browser is told to refuse any other origin."""
    async with make_app() as app:
        for page in PAGES:
            response = await app.client.get(page)
            found = references(response.text)
            assert found.urls, page
            for tag, url in found.urls:
                parts = urlsplit(url)
                assert not parts.scheme and not parts.netloc and not url.startswith("/"), (page, tag, url)
                target = urlsplit(urljoin(f"http://testserver{page}", url)).path
                assert target in PAGE_PATHS, (page, url)
            csp = response.headers["content-security-policy"]
            assert "http" not in csp and "*" not in csp, csp
        # ReDoc's bundle put Redocly's logo from their CDN in every page's menu
        redoc = await app.client.get(STATIC_PREFIX + "redoc.standalone.js")
        assert "API docs by Redocly" in redoc.text and REDOC_LOGO not in redoc.text
    for path in STATIC_DIR.iterdir():  # our own files name no other origin at all
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path.name


@pytest.mark.asyncio
async def test_swagger_ui_is_fastapis_page_with_the_key_script_before_its_bootstrap(make_app: AppFactory) -> None:
    async with make_app() as app:
        html = (await app.client.get("/docs")).text
    scripts = references(html).scripts
    assert scripts == ["static/swagger-ui-bundle.js", "static/docs.js", "inline"], scripts
    assert "url: 'openapi.json'" in html
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    assert "oauth2RedirectUrl" not in html


@pytest.mark.asyncio
async def test_with_api_keys_the_pages_are_public_but_the_document_is_not(make_app: AppFactory) -> None:
    async with make_app(api_keys=KEY) as app:
        for path in sorted(PAGE_PATHS):
            assert (await app.client.get(path)).status_code == 200, path
        refused = await app.client.get("/openapi.json")
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
        assert (await app.client.get(STATIC_PREFIX + "nowhere.js")).status_code == 401
        document = await app.client.get("/openapi.json", headers={"authorization": f"Bearer {KEY}"})
        assert document.status_code == 200
        schema = document.json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert schema["security"] == [{"bearer": []}]
    waived = {path for path, item in schema["paths"].items() for op in item.values() if op.get("security") == []}
    assert waived == {"/healthz", "/readyz", "/metrics"}
    # Every operation behind the keys declares the 401 it answers without one (/models did not).
    undeclared = [path for path, item in schema["paths"].items() for op in item.values()
                  if path not in waived and "401" not in op["responses"]]
    assert undeclared == []
    assert not any(path.startswith(("/docs", "/redoc", STATIC_PREFIX)) or path == "/" for path in schema["paths"])


@pytest.mark.asyncio
async def test_the_document_asks_a_key_for_metrics_when_the_setting_does(make_app: AppFactory) -> None:
    async with make_app(api_keys=KEY, metrics_require_key=True) as app:
        schema = app.app.openapi()
    assert "security" not in schema["paths"]["/metrics"]["get"]
    assert "401" in schema["paths"]["/metrics"]["get"]["responses"]
    assert schema["paths"]["/healthz"]["get"]["security"] == []


@pytest.mark.asyncio
async def test_without_api_keys_the_document_declares_no_security(make_app: AppFactory) -> None:
    async with make_app() as app:
        schema = (await app.client.get("/openapi.json")).json()
    assert "security" not in schema and "securitySchemes" not in schema.get("components", {})
    assert all("security" not in op for item in schema["paths"].values() for op in item.values())


def test_every_page_file_is_package_data() -> None:
    """A non-editable install (the Docker image's wheel) carries every file under service/http/static."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["service.http"]
    for path in STATIC_DIR.iterdir():
        relative = path.relative_to(STATIC_DIR.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
    assert {a.file.name for a in ASSETS.values() if a.file.parent == STATIC_DIR} | {"playground.html"} == {
        p.name for p in STATIC_DIR.iterdir()
    }


@pytest.mark.asyncio
async def test_the_document_describes_errors_headers_and_bodies_as_served(make_app: AppFactory) -> None:
    """It declared no error body, no response header, no request header and two of the four body types."""
    async with make_app() as app:
        schema = (await app.client.get("/openapi.json")).json()
        refused = await app.client.post("/decode/mel", json={"mel": [[0.0]], "note": "x"})
    for path in ("/decode/mel", "/decode/encodec", "/resynthesize"):
        operation = schema["paths"][path]["post"]
        for status, response in operation["responses"].items():
            if status != "200":
                assert "application/json" in response["content"], (path, status)
                assert "X-Request-Id" in response["headers"], (path, status)
        answered = set(operation["responses"]["200"]["headers"])
        assert {"X-Model", "X-Sample-Rate", "X-Audio-Duration", "X-Request-Id"} <= answered
        assert "Retry-After" in operation["responses"]["429"]["headers"]
        read = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert read == {"X-Request-Timeout", "X-Request-Id"}
    mel = schema["paths"]["/decode/mel"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-npy", "application/npy", "application/octet-stream"} <= set(mel)
    assert mel["application/json"]["schema"]["additionalProperties"] is False
    assert refused.status_code == 422 and set(refused.json()) == {"error"}  # what the document now says of it

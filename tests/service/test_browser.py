"""The pages in a real browser: headless Chromium, driven through chromium-driver, against the app
behind uvicorn. Swagger UI and ReDoc render every operation, also on a server with API keys once the
key is entered, and Try it out works; the playground resynthesizes an uploaded file with either
model and a recording, and shows the server's JSON errors. No page runs into a script error or its
Content-Security-Policy, which is what loading anything from another origin would do."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_helpers import live_server, settings_with

from service.runtime.models import ServedModel
from service.settings import Settings
from service.testing import audio_file

webdriver = pytest.importorskip("selenium.webdriver", reason="needs the PyPI package selenium (the test extra)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
KEY = "browser-test-key-9d2e"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module; each test's server has its own port, so its own origin
    and sessionStorage."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs the Debian packages chromium and chromium-driver (scripts/install-test-tools.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,900", "--no-first-run", "--disable-extensions",
                     # a microphone that beeps, granted without asking
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path given: selenium-manager, which would try to download one, never runs.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def chirp_wav(tmp_path: Path) -> Path:
    """1 s at 24 kHz sweeping 100 Hz -> 6 kHz, 16-bit WAV."""
    rate, seconds, f0, f1 = 24000, 1.0, 100.0, 6000.0
    t = np.arange(int(rate * seconds)) / rate
    samples = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    path = tmp_path / "chirp.wav"
    path.write_bytes(audio_file(samples.astype(np.float32), rate, subtype="PCM_16"))
    return path


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, f"waited {WAIT_S} s for {what}")


def console_problems(driver: WebDriver) -> list[str]:
    """Script errors and CSP reports since the last call. HTTP error statuses the tests cause on
    purpose (401, the playground's 404 for a server without GET /models) are not problems."""
    problems = []
    for entry in driver.get_log("browser"):
        message = entry["message"]
        if "Content Security Policy" in message or (
            entry["level"] == "SEVERE" and "Failed to load resource" not in message
        ):
            problems.append(message)
    return problems


def text_of(driver: WebDriver, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def enter_key_in_docs_bar(driver: WebDriver, key: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, ".vocos-keybar input[name=key]")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, ".vocos-keybar button[type=submit]").click()  # reloads the page


def swagger_operations(driver: WebDriver, count: int) -> set[str]:
    def listed(d: WebDriver) -> set[str] | None:
        paths = {str(e.get_attribute("data-path")) for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        return paths if len(paths) >= count else None

    return set(wait_for(driver, listed, f"Swagger UI to list {count} operation paths"))


async def test_swagger_ui_lists_every_operation_and_plays_an_answer(
    browser: WebDriver, base_settings: Settings, models: dict[str, ServedModel], chirp_wav: Path
) -> None:
    """Try it out on resynthesize: the player of the answer plays the audio that came back (Swagger
    UI alone would GET the POST endpoint again for it)."""
    async with live_server(base_settings, models) as server:
        paths = set((await server.client.get("/openapi.json")).json()["paths"])

        def check() -> None:
            browser.get(server.url + "/docs")
            assert swagger_operations(browser, len(paths)) == paths
            operation = "#operations-decode-resynthesize_resynthesize_post"
            browser.find_element(By.CSS_SELECTOR, f"{operation} .opblock-summary").click()
            wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{operation} input[type=file]"),
                     "the body's file input").send_keys(str(chirp_wav))
            browser.find_element(By.CSS_SELECTOR, f"{operation} .execute").click()
            player = f"{operation} .live-responses-table audio"
            duration = f"const a = document.querySelector({player!r}); return a && a.readyState > 0 ? a.duration : null"
            assert abs(wait_for(browser, lambda d: d.execute_script(duration), "the answer's player") - 1.0) < 0.05
            assert console_problems(browser) == []

        await asyncio.to_thread(check)
        assert server.request_count("/resynthesize", 200) == 1
        assert server.request_count("/resynthesize", 405) == 0


async def test_with_keys_the_docs_ask_for_one_then_try_it_out_sends_it(
    browser: WebDriver, base_settings: Settings, models: dict[str, ServedModel]
) -> None:
    """Swagger UI loads the document and "Try it out" succeeds on a key-only endpoint once the key is
    in the bar; ReDoc, in the same tab, then uses the same key."""
    settings = settings_with(base_settings, api_keys=KEY, metrics_require_key=True)
    async with live_server(settings, models) as server:
        paths = set(server.app.openapi()["paths"])

        def check() -> None:
            browser.get(server.url + "/docs")
            wait_for(browser, lambda d: "needs an API key" in text_of(d, ".vocos-keybar-message"), "the key request")
            enter_key_in_docs_bar(browser, KEY)
            assert swagger_operations(browser, len(paths)) == paths
            authorized = browser.execute_script("return ui.authSelectors.authorized().toJS()")
            assert authorized["bearer"]["value"] == KEY
            operation = "#operations-health-metrics_metrics_get"
            browser.find_element(By.CSS_SELECTOR, f"{operation} .opblock-summary").click()
            wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{operation} .execute"), "Execute").click()
            status = f"{operation} .live-responses-table tr.response .response-col_status"
            wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, status), "the response")
            assert text_of(browser, status).startswith("200")
            browser.get(server.url + "/redoc")
            wait_for(browser, lambda d: "/decode/mel" in d.page_source, "ReDoc to render the operations")
            assert text_of(browser, ".vocos-keybar-message") == "Key in use (this tab only)."
            assert console_problems(browser) == []

        await asyncio.to_thread(check)


def upload(driver: WebDriver, wav: Path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(wav))
    wait_for(driver, lambda d: text_of(d, "#status") == "Ready: press Resynthesize.", "the clip to be decoded")


def resynthesize(driver: WebDriver) -> str:
    """Press Resynthesize; the status text once the server's answer is shown."""
    driver.find_element(By.ID, "send").click()  # the status turns "busy" before the click returns
    wait_for(driver, lambda d: d.find_element(By.ID, "status").get_attribute("data-kind") in ("ok", "error"),
             "the server's answer")
    return text_of(driver, "#status")


def assert_both_clips_shown(driver: WebDriver) -> None:
    for which in ("input", "result"):
        assert str(driver.find_element(By.ID, f"{which}-audio").get_attribute("src")).startswith("blob:"), which
        assert driver.find_element(By.ID, f"{which}-spectrogram").get_attribute("data-drawn") == "true", which


def download_offered(driver: WebDriver) -> str:
    """The file name the result's download link saves under; the link is shown and holds the result."""
    link = driver.find_element(By.ID, "result-download")
    assert link.is_displayed()
    assert link.get_attribute("href") == driver.find_element(By.ID, "result-audio").get_attribute("src")
    return str(link.get_attribute("download"))


async def test_the_playground_resynthesizes_an_uploaded_file_with_either_model(
    browser: WebDriver, base_settings: Settings, models: dict[str, ServedModel], chirp_wav: Path
) -> None:
    async with live_server(base_settings, models) as server:

        def check() -> None:
            browser.get(server.url + "/")
            wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2, "the models")
            upload(browser, chirp_wav)
            status = resynthesize(browser)
            assert status.startswith("200 OK: "), status
            assert abs(float(status.split()[2]) - 1.0) < 0.05, status  # within a hop of the 1 s sent
            assert_both_clips_shown(browser)
            assert download_offered(browser) == "chirp-vocos-mel.wav"
            browser.find_element(By.CSS_SELECTOR, "#model option[value=encodec]").click()
            browser.find_element(By.CSS_SELECTOR, "#bandwidth option[value='1.5']").click()
            assert resynthesize(browser).startswith("200 OK")
            assert_both_clips_shown(browser)
            assert text_of(browser, "#result-info").startswith("encodec, 1.5 kbps: ")
            assert download_offered(browser) == "chirp-vocos-encodec-1.5kbps.wav"
            assert console_problems(browser) == []

        await asyncio.to_thread(check)
        assert server.request_count("/resynthesize", 200) == 2


async def test_the_playground_resynthesizes_a_recording(
    browser: WebDriver, base_settings: Settings, models: dict[str, ServedModel]
) -> None:
    """What MediaRecorder makes (WebM/Opus in Chromium, which libsndfile cannot read) is decoded in
    the page and sent as WAV."""
    async with live_server(base_settings, models) as server:

        def check() -> None:
            browser.get(server.url + "/")
            wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2, "the models")
            browser.find_element(By.ID, "record").click()
            wait_for(browser, lambda d: text_of(d, "#record") == "■ Stop", "the recording to start")
            time.sleep(1.0)  # the length of the recording
            browser.find_element(By.ID, "record").click()
            wait_for(browser, lambda d: text_of(d, "#status") == "Ready: press Resynthesize.", "the clip")
            assert text_of(browser, "#input-info").startswith("recording: ")
            assert resynthesize(browser).startswith("200 OK: ")
            assert_both_clips_shown(browser)
            assert console_problems(browser) == []

        await asyncio.to_thread(check)
        assert server.request_count("/resynthesize", 200) == 1


async def test_the_playground_says_why_a_file_cannot_be_resynthesized(
    browser: WebDriver, base_settings: Settings, models: dict[str, ServedModel], chirp_wav: Path, tmp_path: Path
) -> None:
    """An empty file is refused on the page (it was sent, and its empty player logged an error); a body
    over the server's limit is explained in terms of the file the user chose (the page sends 16-bit WAV)."""
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    async with live_server(settings_with(base_settings, max_body_bytes=20_000), models) as server:

        def check() -> None:
            browser.get(server.url + "/")
            wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2, "the models")
            browser.find_element(By.ID, "file").send_keys(str(empty))
            wait_for(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-kind") == "error",
                     "the empty file's message")
            assert text_of(browser, "#status").startswith("empty.wav is empty (0 bytes): choose an audio file")
            assert browser.find_element(By.ID, "send").get_attribute("disabled") is not None
            upload(browser, chirp_wav)
            status = resynthesize(browser)
            assert status.startswith("413 payload_too_large: "), status
            assert status.endswith("This page sends the clip as 16-bit WAV at 24 kHz (48 kB here): try a shorter clip.")
            assert console_problems(browser) == []

        await asyncio.to_thread(check)
        assert server.request_count("/resynthesize", 413) == 1
        assert server.request_count("/resynthesize", 422) == 0


async def test_the_playground_fits_a_phones_width(
    browser: WebDriver, base_settings: Settings, models: dict[str, ServedModel], chirp_wav: Path
) -> None:
    """At 375 CSS pixels nothing sticks out sideways (the clips' grid asked for 420 px, the status a
    request id's width), with a result shown."""
    async with live_server(base_settings, models) as server:

        def check() -> list[str]:
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": 375, "height": 800, "deviceScaleFactor": 2, "mobile": True})
            try:
                browser.get(server.url + "/")
                wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2, "the models")
                upload(browser, chirp_wav)
                assert resynthesize(browser).startswith("200 OK")
                return list(browser.execute_script(
                    "const width = document.documentElement.clientWidth;"
                    "return [...document.querySelectorAll('body *')]"
                    "  .filter(e => e.getBoundingClientRect().right > width + 0.5)"
                    "  .map(e => e.tagName + '#' + e.id);"))
            finally:
                browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

        assert await asyncio.to_thread(check) == []


async def test_the_playground_shows_the_servers_error_then_sends_the_key(
    browser: WebDriver, base_settings: Settings, models: dict[str, ServedModel], chirp_wav: Path
) -> None:
    async with live_server(settings_with(base_settings, api_keys=KEY), models) as server:

        def check() -> None:
            browser.get(server.url + "/")
            wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2, "the models")
            # asked for on load, before any upload (the page said nothing until a 401 from Resynthesize)
            wait_for(browser, lambda d: "needs an API key" in text_of(d, "#status"), "the key request")
            assert browser.switch_to.active_element.get_attribute("id") == "api-key"
            upload(browser, chirp_wav)
            status = resynthesize(browser)
            assert status.startswith("401 unauthorized: missing bearer token") and "(request id " in status
            browser.find_element(By.ID, "api-key").send_keys("wrong-key\n")
            wait_for(browser, lambda d: "refused this API key" in text_of(d, "#status"), "the wrong key's message")
            assert resynthesize(browser).startswith("401 unauthorized: invalid API key")
            browser.find_element(By.ID, "api-key").clear()
            browser.find_element(By.ID, "api-key").send_keys(KEY)
            assert resynthesize(browser).startswith("200 OK")
            assert_both_clips_shown(browser)
            kept = browser.execute_script("return [location.href, localStorage.length, sessionStorage.length]")
            assert kept == [server.url + "/", 0, 1]
            assert console_problems(browser) == []

        await asyncio.to_thread(check)
        assert server.request_count("/resynthesize", 401) == 2
        assert server.request_count("/resynthesize", 200) == 1


# A page's streams: the key as a subprotocol (service.http.auth), "vocos" beside it; each stream reports the
# subprotocol the browser settled on, its close code and the messages it got.
_OPEN_STREAMS = """
const [url, keys, done] = arguments;
const base64url = s => btoa(s).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
const open = key => new Promise(resolve => {
  const ws = new WebSocket(url, ["vocos", "vocos.bearer." + base64url(key)]);
  const seen = [];
  ws.onmessage = e => { seen.push(JSON.parse(e.data)); if (seen[0].type === "start") ws.close(1000); };
  ws.onclose = e => resolve({protocol: ws.protocol, code: e.code, seen: seen});
});
Promise.all(keys.map(open)).then(done);
"""


async def test_a_page_opens_a_stream_with_its_key_as_a_subprotocol(
    browser: WebDriver, base_settings: Settings, models: dict[str, ServedModel]
) -> None:
    """Browsers cannot set Authorization on a WebSocket; the key offered as a subprotocol opens the stream, a
    wrong one gets the 401 as a message (the handshake was not failed by the browser)."""
    async with live_server(settings_with(base_settings, api_keys=KEY), models) as server:

        def check() -> list[dict[str, Any]]:
            browser.get(server.url + "/healthz")
            url = server.url.replace("http://", "ws://") + "/stream/mel"
            return list(browser.execute_async_script(_OPEN_STREAMS, url, [KEY, "wrong-key"]))

        right, wrong = await asyncio.to_thread(check)
    assert (right["protocol"], right["seen"][0]["type"]) == ("vocos", "start")
    assert (wrong["protocol"], wrong["code"]) == ("vocos", 4401)
    assert (wrong["seen"][0]["type"], wrong["seen"][0]["status"]) == ("error", 401)

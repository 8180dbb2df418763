"""`/docs` and `/redoc` render in a real headless Chromium with the network cut off from everything
but the service: every request the page makes goes to the service itself.

Chromium (Debian's `chromium`) is driven over the DevTools protocol: it records every request,
waits for the operations to appear in the rendered DOM and takes the README's screenshot
(`UPDATE_SCREENSHOTS=1` writes it to docs/images/swagger-ui.png).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.processes import free_port, serve, wait_ready
from tests.system import require_programs

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "images" / "swagger-ui.png"
OPERATIONS = 9
# The probe's flags for this machine (no background traffic, no sandbox as root), then the cut:
# every host name fails to resolve and every connection goes to a proxy that does not exist,
# except the service's own address.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def log(message: str) -> None:
    print(f"[docs-browser] {message}", file=sys.stderr)  # noqa: T201  (timings of a real-process test)


class DevTools:
    """The smallest DevTools-protocol client: commands by id, events kept for later."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, timeout: float = 15, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 30) -> Any:
        """Poll a JavaScript expression until it is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"never true: {expression}")

    def failed_loads(self) -> dict[str, str]:
        """Request id -> why it failed: `csp` when the page's policy stopped it before it was sent."""
        return {
            e["params"]["requestId"]: e["params"].get("blockedReason") or e["params"]["errorText"]
            for e in self.events
            if e.get("method") == "Network.loadingFailed"
        }

    def requests(self) -> dict[str, str]:
        return {
            e["params"]["requestId"]: e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        }


@pytest.fixture(scope="module")
def service(database_url: str) -> Iterator[str]:
    port = free_port()
    started = time.monotonic()
    proc = serve(database_url, port)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        log(f"serve ready in {time.monotonic() - started:.1f} s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser(service: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    require_programs({"chromium": "chromium"}, "fonts-dejavu-core")
    profile = tmp_path_factory.mktemp("chromium-profile")
    address = service.removeprefix("http://")
    command = [
        "chromium",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",  # nothing listens there: every connection is refused
        f"--proxy-bypass-list=<-loopback>;{address}",  # ...but the service's own
        "about:blank",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page = _page_socket(profile / "DevToolsActivePort", proc)
        with connect(page, max_size=None, open_timeout=10) as socket:
            tools = DevTools(socket)
            tools.send("Network.enable")
            tools.send("Page.enable")
            tools.send(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=1180,
                deviceScaleFactor=1,
                mobile=False,
            )
            log(f"chromium ready in {time.monotonic() - started:.1f} s")
            yield tools
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _page_socket(port_file: Path, proc: subprocess.Popen[bytes]) -> str:
    """The DevTools WebSocket of Chromium's first page, once Chromium wrote its port file."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        if port_file.exists() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


def load(browser: DevTools, url: str, ready: str) -> float:
    browser.events.clear()
    started = time.monotonic()
    browser.send("Page.navigate", url=url)
    browser.wait_for(ready)
    return time.monotonic() - started


def assert_only_the_service_was_asked(browser: DevTools, service: str) -> None:
    """Every request went to the service; one for another host is allowed only when the page's
    Content-Security-Policy stopped it before it was sent (ReDoc's vendor logo)."""
    requests, failed = browser.requests(), browser.failed_loads()
    assert requests
    local = (f"{service}/", "data:", "blob:")
    elsewhere = {
        url for rid, url in requests.items() if not url.startswith(local) and failed.get(rid) != "csp"
    }
    assert elsewhere == set()
    assert {requests.get(rid, rid): why for rid, why in failed.items() if why != "csp"} == {}


@pytest.mark.slow
class TestDocsInABrowser:
    def test_swagger_ui_renders_every_operation_offline(self, browser: DevTools, service: str) -> None:
        rendered = f"document.querySelectorAll('.opblock').length >= {OPERATIONS}"
        log(f"/docs rendered in {load(browser, f'{service}/docs', rendered):.1f} s")
        paths = browser.evaluate(
            "[...document.querySelectorAll('.opblock')].map("
            "b => b.querySelector('.opblock-summary-method').textContent + ' ' + "
            "b.querySelector('.opblock-summary-path').getAttribute('data-path'))"
        )
        assert sorted(paths) == sorted(
            [
                "POST /betlink/session",
                "POST /betlink/sessions/introspect",
                "POST /betlink/authenticate",
                "GET /bidpaw/open-session",
                "GET /bidpaw/wallet",
                "POST /bidpaw/wallet",
                "PUT /players/{userId}/block",
                "DELETE /players/{userId}/block",
                "GET /healthz",
                "GET /readyz",
                "GET /metrics",
            ]
        )
        assert browser.evaluate("document.querySelector('.btn.authorize') !== null")  # the security schemes
        summaries = browser.evaluate(
            "[...document.querySelectorAll('.opblock-summary-description')].map(e => e.textContent)"
        )
        assert "Issue a launch token for a player" in summaries
        assert_only_the_service_was_asked(browser, service)
        self._screenshot(browser)

    def test_redoc_renders_every_operation_offline(self, browser: DevTools, service: str) -> None:
        rendered = f"document.querySelectorAll('[data-section-id*=\"operation/\"]').length >= {OPERATIONS}"
        log(f"/redoc rendered in {load(browser, f'{service}/redoc', rendered):.1f} s")
        assert "Exchange a launch token" in browser.evaluate("document.body.innerText")
        assert_only_the_service_was_asked(browser, service)

    def _screenshot(self, browser: DevTools) -> None:
        png = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
        assert png.startswith(b"\x89PNG")
        if os.environ.get("UPDATE_SCREENSHOTS"):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            SCREENSHOT.write_bytes(png)
            log(f"wrote {SCREENSHOT.relative_to(ROOT)}")

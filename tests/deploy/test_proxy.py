"""deploy/nginx, started for real (Debian's nginx) in front of a served process.

The public listener is on 127.0.0.1; clients bound to 127.0.0.2 and 127.0.0.3 are "elsewhere":
the test's allow-list for /betlink/authenticate holds only 127.0.0.1/32, the one for
/bidpaw/wallet 127.0.0.1/32 and 127.0.0.6/32.
"""

from __future__ import annotations

import select
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import GATEWAY_HEADERS
from tests.deploy.containers import ROOT, timing
from tests.processes import free_port, serve, wait_ready
from tests.system import require_programs

pytestmark = pytest.mark.slow

NGINX_DIR = ROOT / "deploy" / "nginx"
HEADER_TIMEOUT = 10  # client_header_timeout in the template
OUTSIDE = "127.0.0.2"
BIDPAW = "127.0.0.6"  # on the test's allow-list for /bidpaw/wallet, and on no other


@dataclass(frozen=True)
class Proxy:
    public: str
    internal: str
    service: str

    @property
    def public_port(self) -> int:
        return int(self.public.rsplit(":", 1)[1])


def render(template: str, **values: str) -> str:
    """What `envsubst '${NAME} ...'` does with exactly these names."""
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    return template


def _nginx_conf(directory: Path, *, public: int, internal: int, upstream: int) -> Path:
    site = render(
        (NGINX_DIR / "partner-gateway.conf.template").read_text(),
        PUBLIC_LISTEN=f"127.0.0.1:{public}",
        INTERNAL_LISTEN=f"127.0.0.1:{internal}",
        UPSTREAM=f"127.0.0.1:{upstream}",
    )
    assert all("${" not in line for line in site.splitlines() if not line.lstrip().startswith("#"))
    (directory / "partner-gateway.conf").write_text(site)
    (directory / "betlink-allow.conf").write_text("allow 127.0.0.1/32;\n")
    (directory / "bidpaw-allow.conf").write_text(f"allow 127.0.0.1/32;\nallow {BIDPAW}/32;\n")
    main = directory / "nginx.conf"
    main.write_text(
        f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include partner-gateway.conf;
}}
"""
    )
    return main


@pytest.fixture(scope="module")
def proxy(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    started = time.monotonic()
    require_programs({"nginx": "nginx"})
    directory = tmp_path_factory.mktemp("nginx")
    directory.chmod(0o755)  # nginx's workers run as nobody
    service_port, public, internal = free_port(), free_port(), free_port()
    service = serve(database_url, service_port)
    nginx: subprocess.Popen[bytes] | None = None
    try:
        wait_ready(f"http://127.0.0.1:{service_port}", service)
        conf = _nginx_conf(directory, public=public, internal=internal, upstream=service_port)
        subprocess.run(["nginx", "-t", "-q", "-p", str(directory), "-c", str(conf)], check=True, timeout=30)
        nginx = subprocess.Popen(["nginx", "-p", str(directory), "-c", str(conf), "-g", "daemon off;"])
        proxy = Proxy(
            f"http://127.0.0.1:{public}", f"http://127.0.0.1:{internal}", f"http://127.0.0.1:{service_port}"
        )
        deadline = time.monotonic() + 30
        while not _answers(proxy.public):
            assert nginx.poll() is None, "nginx exited"
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
        timing("nginx in front of serve: started", started)
        yield proxy
    finally:
        for proc in (nginx, service):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _client(base_url: str, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=base_url, transport=httpx.HTTPTransport(local_address=source), timeout=10)


class TestHeaderLimits:
    def test_a_50_mb_header_is_refused_long_before_it_is_sent(self, proxy: Proxy) -> None:
        sent, answer = 0, b""
        chunk = b"a" * 65536
        with socket.create_connection(("127.0.0.1", proxy.public_port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: ")
            while sent < 50_000_000 and not answer:
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    answer = sock.recv(65536)
        # nginx answers once the header outgrows its 16 KiB buffer, then discards the rest; what
        # was sent by then is mostly the loopback socket buffers (a few MB).
        assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
        assert sent < 10_000_000

    def test_a_header_sent_one_byte_a_second_is_cut_within_the_header_timeout(self, proxy: Proxy) -> None:
        request = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: " + b"s" * 60
        started = time.monotonic()
        closed_after: float | None = None
        with socket.create_connection(("127.0.0.1", proxy.public_port), timeout=2) as sock:
            for byte in request:
                try:
                    sock.sendall(bytes([byte]))
                    sock.settimeout(1)
                    if sock.recv(1024) == b"":
                        closed_after = time.monotonic() - started
                        break
                except TimeoutError:
                    continue  # still open: one more byte
                except (BrokenPipeError, ConnectionResetError):
                    closed_after = time.monotonic() - started
                    break
        timing("slow header cut after", started)
        assert closed_after is not None, "the connection stayed open for the whole slow header"
        assert closed_after < HEADER_TIMEOUT + 3

    def test_an_ordinary_request_passes(self, proxy: Proxy) -> None:
        with _client(proxy.public) as client:
            assert client.get("/readyz").status_code == 200


class TestIdentityHeader:
    def test_a_client_supplied_user_id_never_reaches_the_service(self, proxy: Proxy) -> None:
        with _client(proxy.service) as direct:
            missing = direct.post("/betlink/session", headers=GATEWAY_HEADERS)
        assert missing.status_code == 400
        spellings = [
            [("X-User-Id", "victim")],
            [("x-user-id", "victim")],
            [("X-USER-ID", "victim"), ("X-User-Id", "victim")],
        ]
        with _client(proxy.public) as client:
            for headers in spellings:
                answer = client.post("/betlink/session", headers=[*GATEWAY_HEADERS.items(), *headers])
                # Exactly what the service says to a request without the header.
                assert (answer.status_code, answer.json()) == (400, missing.json()), headers


class TestAllowList:
    def test_authenticate_is_refused_outside_the_configured_cidrs(self, proxy: Proxy) -> None:
        with _client(proxy.public, OUTSIDE) as outside:
            refused = outside.post("/betlink/authenticate", json={})
            other = outside.get("/healthz")
        assert refused.status_code == 403
        assert "partner-gateway" not in refused.text  # nginx's page: the service never saw it
        assert other.status_code == 200

    def test_authenticate_from_inside_reaches_the_service(self, proxy: Proxy) -> None:
        with _client(proxy.public) as inside:
            answer = inside.post("/betlink/authenticate", json={})
        # The service's own refusal of a call without BetLink's key, in BetLink's error shape.
        assert answer.json()["status"] == "FAILED_AUTHENTICATION"


class TestRateLimit:
    def test_one_client_is_limited_and_another_is_not(self, proxy: Proxy) -> None:
        started = time.monotonic()
        statuses: list[int] = []
        with _client(proxy.public, "127.0.0.3") as greedy:
            while 429 not in statuses and len(statuses) < 2000 and time.monotonic() - started < 20:
                statuses.append(greedy.get("/healthz").status_code)
        timing(f"rate limit reached after {len(statuses)} requests", started)
        assert statuses[-1] == 429
        assert set(statuses) == {200, 429}
        with _client(proxy.public, "127.0.0.4") as other:
            assert other.get("/healthz").status_code == 200


class TestListeners:
    @pytest.mark.parametrize(
        "path", ["/metrics", "/metrics/", "//metrics", "/%6detrics", "/docs", "/openapi.json"]
    )
    def test_metrics_and_docs_are_not_on_the_public_listener(self, proxy: Proxy, path: str) -> None:
        with _client(proxy.public, "127.0.0.5") as client:
            assert client.get(path).status_code == 404

    def test_metrics_are_on_the_internal_listener(self, proxy: Proxy) -> None:
        with _client(proxy.internal) as client:
            answer = client.get("/metrics")
        assert answer.status_code == 200
        assert "partner_gateway_build_info" in answer.text


class TestWalletCallbacks:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/bidpaw/wallet"),
            ("GET", "/bidpaw/wallet?method=charge&userId=u1"),
            ("POST", "//bidpaw/wallet"),
            ("POST", "/bidpaw/%77allet"),
        ],
    )
    def test_are_refused_outside_bidpaws_addresses(self, proxy: Proxy, method: str, path: str) -> None:
        with _client(proxy.public, OUTSIDE) as outside:
            # The raw path as written: httpx would read "//bidpaw/..." as a host name.
            url = httpx.URL(proxy.public).copy_with(raw_path=path.encode())
            refused = outside.request(method, url, json={} if method == "POST" else None)
        assert refused.status_code == 403
        assert "x-request-id" not in refused.headers  # nginx's page: the service never saw it

    def test_pass_from_bidpaws_addresses_with_no_per_address_limit(self, proxy: Proxy) -> None:
        started = time.monotonic()
        statuses: list[int] = []
        # Past 20 a second plus the burst of 40, the per-address limit would have said 429.
        with _client(proxy.public, BIDPAW) as bidpaw:
            while (
                len(statuses) < max(150, 60 + 20 * (time.monotonic() - started))
                and time.monotonic() - started < 30
            ):
                answer = bidpaw.post("/bidpaw/wallet", json={})
                assert "x-request-id" in answer.headers, answer.status_code  # the service answered
                statuses.append(answer.status_code)
            elapsed = time.monotonic() - started
            timing(f"{len(statuses)} wallet callbacks from one address", started)
            assert len(statuses) >= 60 + 20 * elapsed, "too slow to outrun the limit: inconclusive"
            assert 429 not in statuses
            assert 403 not in statuses
            # The same address is still limited everywhere else.
            elsewhere = [bidpaw.get("/healthz").status_code for _ in range(60)]
        assert 429 in elsewhere

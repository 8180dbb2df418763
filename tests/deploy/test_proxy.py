"""deploy/nginx, started for real (Debian's nginx) in front of a served process.

The public listener is on 127.0.0.1; clients bound to 127.0.0.2 and 127.0.0.3 are "elsewhere":
the test's allow-list for /betlink/authenticate holds only 127.0.0.1/32, the one for
/bidpaw/wallet 127.0.0.1/32 and 127.0.0.6/32.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import BETLINK_KEY, GATEWAY_HEADERS, GATEWAY_KEY
from tests.deploy.containers import ROOT, timing
from tests.processes import free_port, serve, wait_ready
from tests.system import require_programs

pytestmark = pytest.mark.slow

NGINX_DIR = ROOT / "deploy" / "nginx"
HEADER_TIMEOUT = 10  # client_header_timeout in the template
OUTSIDE = "127.0.0.2"
BIDPAW = "127.0.0.6"  # on the test's allow-list for /bidpaw/wallet, and on no other
SERVICE_TTLS = {"launch": "3", "idempotency": "4", "session": "5"}  # short: certify checks each


@dataclass(frozen=True)
class Proxy:
    public: str
    internal: str
    service: str
    gateway: str

    @property
    def public_port(self) -> int:
        return int(self.public.rsplit(":", 1)[1])


def render(template: str, **values: str) -> str:
    """What `envsubst '${NAME} ...'` does with exactly these names."""
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    return template


def _nginx_conf(
    directory: Path, *, public: int, gateway: int, internal: int, upstream: int, template: str | None = None
) -> Path:
    site = render(
        template or (NGINX_DIR / "partner-gateway.conf.template").read_text(),
        PUBLIC_LISTEN=f"127.0.0.1:{public}",
        GATEWAY_LISTEN=f"127.0.0.1:{gateway}",
        INTERNAL_LISTEN=f"127.0.0.1:{internal}",
        UPSTREAM=f"127.0.0.1:{upstream}",
    )
    assert all("${" not in line for line in site.splitlines() if not line.lstrip().startswith("#"))
    (directory / "partner-gateway.conf").write_text(site)
    shutil.copy(NGINX_DIR / "partner-gateway-errors.conf", directory)
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


@contextmanager
def nginx_in_front(directory: Path, service: str, *, template: str | None = None) -> Iterator[Proxy]:
    """Real nginx with the template (or a variant of it) rendered in `directory`, before `service`."""
    directory.chmod(0o755)  # nginx's workers run as nobody
    public, gateway, internal = free_port(), free_port(), free_port()
    upstream = int(service.rsplit(":", 1)[1])
    conf = _nginx_conf(
        directory, public=public, gateway=gateway, internal=internal, upstream=upstream, template=template
    )
    subprocess.run(["nginx", "-t", "-q", "-p", str(directory), "-c", str(conf)], check=True, timeout=30)
    nginx = subprocess.Popen(["nginx", "-p", str(directory), "-c", str(conf), "-g", "daemon off;"])
    try:
        proxy = Proxy(
            f"http://127.0.0.1:{public}",
            f"http://127.0.0.1:{internal}",
            service,
            f"http://127.0.0.1:{gateway}",
        )
        deadline = time.monotonic() + 30
        while not _answers(proxy.internal):
            assert nginx.poll() is None, "nginx exited"
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
        yield proxy
    finally:
        _stop(nginx)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def proxy(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    started = time.monotonic()
    require_programs({"nginx": "nginx"})
    service_port = free_port()
    service = serve(
        database_url,
        service_port,
        BETLINK_LAUNCH_TOKEN_TTL_SECONDS=SERVICE_TTLS["launch"],
        IDEMPOTENCY_TTL_SECONDS=SERVICE_TTLS["idempotency"],
        BETLINK_SESSION_TTL_SECONDS=SERVICE_TTLS["session"],
    )
    try:
        wait_ready(f"http://127.0.0.1:{service_port}", service)
        with nginx_in_front(tmp_path_factory.mktemp("nginx"), f"http://127.0.0.1:{service_port}") as proxy:
            timing("nginx in front of serve: started", started)
            yield proxy
    finally:
        _stop(service)


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
                last = greedy.get("/healthz")
                statuses.append(last.status_code)
        timing(f"rate limit reached after {len(statuses)} requests", started)
        assert statuses[-1] == 429
        assert set(statuses) == {200, 429}
        _assert_problem(last, 429)  # in our shape (seen failing before the fix: nginx's HTML)
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


PROBLEM_FIELDS = {"type", "title", "status", "detail"}
OVER_THE_CAP = b" " * 100_000
BIG_HEADER = {"X-Padding": "p" * 20_000}


def _assert_problem(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text[:200]
    assert answer.headers["content-type"] == "application/problem+json", answer.text[:200]
    body = answer.json()
    assert set(body) == PROBLEM_FIELDS, body
    assert body["status"] == status


def _assert_betlink(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text[:200]
    assert answer.headers["content-type"] == "application/json", answer.text[:200]
    assert answer.json()["status"] == "FAILED_AUTHENTICATION", answer.text
    assert answer.json()["errorCode"] == code


class TestNginxRefusalsInOurShapes:
    """nginx's own 400, 403, 404, 413 and 429 in the contract's shapes, not nginx's HTML pages
    (each seen failing with the previous template: HTML)."""

    @pytest.mark.parametrize(
        "path", ["/betlink/session", "/betlink/sessions/introspect", "/players/p1/block", "/healthz"]
    )
    def test_a_body_over_the_cap_is_a_413_problem(self, proxy: Proxy, path: str) -> None:
        with _client(proxy.public) as client:
            answer = client.post(path, content=OVER_THE_CAP)
        _assert_problem(answer, 413)
        assert "x-request-id" not in answer.headers  # nginx's answer: the service never saw it

    def test_on_betlinks_auth_endpoint_a_body_over_the_cap_is_400_missing_parameter(
        self, proxy: Proxy
    ) -> None:
        with _client(proxy.public) as client:
            _assert_betlink(
                client.post("/betlink/authenticate", content=OVER_THE_CAP), 400, "MISSING_PARAMETER"
            )
            _assert_betlink(
                client.post("/betlink/authenticate", headers=BIG_HEADER), 400, "MISSING_PARAMETER"
            )

    def test_outside_betlinks_addresses_the_auth_endpoint_answers_betlinks_403(self, proxy: Proxy) -> None:
        with _client(proxy.public, OUTSIDE) as outside:
            _assert_betlink(outside.post("/betlink/authenticate", json={}), 403, "AUTHENTICATION_FAILED")

    def test_an_oversized_header_is_a_400_problem(self, proxy: Proxy) -> None:
        for url in (proxy.public, proxy.gateway):
            with _client(url) as client:
                _assert_problem(client.post("/betlink/session", headers=BIG_HEADER), 400)

    def test_a_repeated_authorization_refused_by_nginx_is_a_400_problem(self, proxy: Proxy) -> None:
        headers = [("Authorization", f"Bearer {GATEWAY_KEY}")] * 2 + [("X-User-Id", "p1")]
        with _client(proxy.gateway) as client:
            _assert_problem(client.post("/betlink/session", headers=headers), 400)

    def test_what_is_not_served_is_a_404_problem(self, proxy: Proxy) -> None:
        with _client(proxy.public, "127.0.0.5") as client:
            _assert_problem(client.get("/metrics"), 404)
        with _client(proxy.gateway) as client:
            _assert_problem(client.get("/metrics"), 404)


class TestTheLimitsDoNotCapTheCasino:
    """The review's finding: one per-address limit for everyone capped all players together
    (150 introspections from one address: 106 x 429). Seen failing before the fix: with the
    previous template, both tests below got 429s (the gateway's calls through its only listener)."""

    def test_the_gateways_introspections_from_one_address_are_not_limited(self, proxy: Proxy) -> None:
        started = time.monotonic()
        with _client(proxy.gateway) as gateway:
            statuses = [
                gateway.post(
                    "/betlink/sessions/introspect",
                    headers=GATEWAY_HEADERS,
                    json={"operatorSessionToken": "x" * 43},
                ).status_code
                for _ in range(150)
            ]
        timing("150 introspections through the gateway's listener", started)
        assert statuses == [200] * 150

    def test_betlinks_calls_from_its_address_are_not_limited(self, proxy: Proxy) -> None:
        started = time.monotonic()
        statuses: list[int] = []
        # Past 20 a second plus the burst of 40, the per-address limit would have said 429.
        with _client(proxy.public) as betlink:
            while (
                len(statuses) < max(150, 60 + 20 * (time.monotonic() - started))
                and time.monotonic() - started < 30
            ):
                statuses.append(betlink.post("/betlink/authenticate", json={}).status_code)
        elapsed = time.monotonic() - started
        timing(f"{len(statuses)} authenticate calls from BetLink's address", started)
        assert len(statuses) >= 60 + 20 * elapsed, "too slow to outrun the limit: inconclusive"
        assert set(statuses) == {403}  # the service's own answer without X-API-Key, never a 429

    def test_the_gateway_listener_passes_the_user_id_the_public_one_drops(self, proxy: Proxy) -> None:
        headers = {**GATEWAY_HEADERS, "X-User-Id": "p-gateway"}
        with _client(proxy.gateway) as gateway, _client(proxy.public) as public:
            assert gateway.post("/betlink/session", headers=headers).status_code == 201
            _assert_problem(public.post("/betlink/session", headers=headers), 400)
            twice = [*headers.items(), ("X-User-Id", "p-other")]
            refused = gateway.post("/betlink/session", headers=twice)
        _assert_problem(refused, 400)
        assert "x-request-id" in refused.headers  # every copy reached the service, which refused it


def _established(port: int) -> int:
    """Established TCP connections whose local port is `port` (the service's side of nginx's)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        count += int(local.rsplit(":", 1)[1], 16) == port and state == "01"
    return count


class TestUpstreamKeepalive:
    def test_nginx_closes_an_idle_upstream_connection_before_uvicorn_does(self, proxy: Proxy) -> None:
        """uvicorn closes idle connections after 5 s; nginx (60 s by default) must close first, or
        a request sent as uvicorn closes gets a 502. Seen failing before the fix (still open)."""
        service_port = int(proxy.service.rsplit(":", 1)[1])
        with _client(proxy.public) as client:
            assert client.get("/healthz").status_code == 200
        started = time.monotonic()
        assert _established(service_port) >= 1  # nginx keeps it for the next request
        time.sleep(4.3 - (time.monotonic() - started))  # after nginx's 3 s, before uvicorn's 5 s
        assert _established(service_port) == 0


class TestCertifyThroughTheProxy:
    """`partner-gateway certify` through the shipped config: public URL, gateway listener, ops."""

    def _certify(self, proxy: Proxy, *extra: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
        env.update(GATEWAY_API_KEYS=GATEWAY_KEY, BETLINK_API_KEYS=BETLINK_KEY)
        command = [
            *(sys.executable, "-m", "partner_gateway", "certify", "--json", "--proxy"),
            *("--url", proxy.public, "--gateway-url", proxy.gateway, "--ops-url", proxy.internal),
        ]
        return subprocess.Popen(
            [*command, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def _finish(self, proc: subprocess.Popen[str]) -> dict[str, str]:
        stdout, stderr = proc.communicate(timeout=CERTIFY_TIMEOUT)
        document = json.loads(stdout)
        return {check["id"]: check["status"] for check in document["checks"]} | {"": stderr}

    def test_certify_passes_through_the_shipped_config(self, proxy: Proxy) -> None:
        started = time.monotonic()
        ttls = ("--launch-token-ttl", "3", "--idempotency-ttl", "4", "--session-ttl", "5")
        statuses = self._finish(self._certify(proxy, *ttls))
        timing("certify through nginx", started)
        stderr = statuses.pop("")
        assert set(statuses.values()) == {"PASS"}, (statuses, stderr)
        assert {"proxy.user_id", "proxy.limits", "ops.public_surface"} <= statuses.keys()

    def test_certify_fails_a_broken_proxy_naming_the_check(
        self, proxy: Proxy, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """The library's breakages of the front proxy, each a one-line change of the template."""
        started = time.monotonic()
        template = (NGINX_DIR / "partner-gateway.conf.template").read_text()
        variants = {name: _broken(template, *change) for name, (change, _) in PROXY_BREAKAGES.items()}
        with ExitStack() as stack:
            proxies = {
                name: stack.enter_context(
                    nginx_in_front(tmp_path_factory.mktemp("broken"), proxy.service, template=text)
                )
                for name, text in variants.items()
            }
            runs = {name: self._certify(broken, "--session-ttl", "5") for name, broken in proxies.items()}
            failed = {
                name: {check for check, status in self._finish(run).items() if status == "FAIL"}
                for name, run in runs.items()
            }
        timing(f"certify through {len(variants)} broken proxies", started)
        assert failed == {name: expected for name, (_, expected) in PROXY_BREAKAGES.items()}


CERTIFY_TIMEOUT = 180
ERRORS_INCLUDE = "    include partner-gateway-errors.conf;\n"
# breakage: ((text in the template, its replacement), the checks certify must fail)
PROXY_BREAKAGES: dict[str, tuple[tuple[str, str], set[str]]] = {
    "the public listener serves /metrics": (
        ("    location ^~ /metrics { return 404; }\n", ""),
        {"ops.public_surface"},
    ),
    "the public listener passes a client's X-User-Id": (
        ('    proxy_set_header X-User-Id "";\n', ""),
        {"proxy.user_id"},
    ),
    "nginx's refusals in HTML": (
        (ERRORS_INCLUDE, ""),
        {"proxy.limits", "ops.public_surface", "auth.repeated_headers", "limits.body_cap"},
    ),
}


def _broken(template: str, text: str, replacement: str) -> str:
    """The template with the first occurrence of `text` replaced (every one for the errors include)."""
    assert text in template, text
    return template.replace(text, replacement, -1 if text == ERRORS_INCLUDE else 1)


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

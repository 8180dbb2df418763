"""The deployment under certification, reached over HTTP as the partners reach it."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

MASK = "***"
SESSION_TTL_SECONDS = 30 * 60  # BetLink's recommended operatorSessionToken life
GATEWAY_PATHS = ("/betlink/session", "/betlink/sessions/", "/players/", "/bidpaw/open-session")
OPS_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
TOKEN_FIELDS = frozenset({"launchToken", "operatorSessionToken", "iframeURL"})
SHOWN_BODY_CHARS = 300

Headers = Mapping[str, str] | list[tuple[str, str]]


class Failed(Exception):
    """A check's expectation that the deployment did not meet."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(expected)
        self.expected = expected
        self.actual = actual


class Skipped(Exception):
    """A check that needs something the run was not given; the reason says what."""


class Secrets:
    """Every key and token met during a run, so that nothing printed shows one."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        for value in values:
            self.add(value)

    def add(self, value: object) -> None:
        if isinstance(value, str) and len(value) >= 6:
            self._values.add(value)
            if "?" in value:  # an iframe URL: its query carries the partner's session token
                self._values.add(value.split("?", 1)[1])

    def mask(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


@dataclass(frozen=True)
class BidpawWallet:
    """What `--bidpaw-wallet` needs to play BidPaw's wallet callbacks (certify/wallet_checks.py)."""

    callback_secret: str  # one of the deployment's BIDPAW_CALLBACK_SECRET
    client_id: str  # its BIDPAW_CLIENT_ID
    game_id: str  # its BIDPAW_GAME_ID
    currency: str = "EUR"  # the test player's wallet currency, sent as X-User-Currency
    sandbox_url: str | None = None  # the sandbox wallet's admin API, for codes 1 and 7 and the ledger


@dataclass(frozen=True)
class Options:
    """What a run needs besides the URL and the keys."""

    player: str
    launch_token_ttl: float | None = None  # the deployment's TTLs: the expiry checks are opt-in
    session_ttl: float | None = None
    idempotency_ttl: float | None = None
    parallel_same_key: int = 8
    parallel_keys: int = 16
    parallel_rounds: int = 3
    bidpaw: bool = False
    bidpaw_iframe_prefix: str | None = None
    gateway_url: str | None = None  # where the casino gateway's calls go (default: the URL)
    ops_url: str | None = None  # where /healthz, /readyz, /metrics, /docs live (default: the URL)
    proxy: bool = False  # the URL is the front proxy: check what it must do too
    bidpaw_wallet: BidpawWallet | None = None

    @property
    def session_ms(self) -> float:
        """The sessionExpiry - timestamp every 200 must show: the TTL given, else BetLink's 30 min."""
        return (self.session_ttl or SESSION_TTL_SECONDS) * 1000


@dataclass(frozen=True)
class LaunchToken:
    """`/betlink/session`'s answer, and when it arrived (time.monotonic)."""

    token: str
    user_id: str
    operator_id: str
    received_at: float


@dataclass
class Deployment:
    """The service at the client's base URL, with the gateway's and BetLink's keys.

    Every request carries `X-Request-ID: certify-<check>-<n>`, so that the deployment's log lines
    can be matched with the check that caused them; every token met is added to `secrets`.
    """

    http: httpx.AsyncClient
    gateway_key: str
    betlink_key: str
    options: Options
    secrets: Secrets
    check: str = "run"
    latencies: list[float] = field(default_factory=list)
    _sent: int = 0

    @property
    def player(self) -> str:
        return self.options.player

    def request_id(self) -> str:
        self._sent += 1
        return f"certify-{self.check}-{self._sent}"

    async def request(
        self, method: str, path: str, *, headers: Headers | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request with this check's X-Request-ID (unless given); a list may repeat a header."""
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        if not any(name.lower() == "x-request-id" for name, _ in items):
            items.insert(0, ("X-Request-ID", self.request_id()))
        started = time.perf_counter()
        response = await self.http.request(method, self.url_for(path), headers=items, **kwargs)
        self.latencies.append(time.perf_counter() - started)
        self._remember_tokens(response)
        return response

    def url_for(self, path: str) -> str:
        """The casino gateway's routes go to --gateway-url and operations to --ops-url when given;
        everything else (and an absolute URL) as it is."""
        if path.startswith(GATEWAY_PATHS) and self.options.gateway_url:
            return self.options.gateway_url + path
        if path.startswith(OPS_PATHS) and self.options.ops_url:
            return self.options.ops_url + path
        return path

    def public(self, path: str) -> str:
        """`path` on the URL the partners reach, whatever --gateway-url and --ops-url say."""
        return str(self.http.base_url).rstrip("/") + path

    def _remember_tokens(self, response: httpx.Response) -> None:
        body = json_or_none(response)
        if isinstance(body, dict):
            for name in TOKEN_FIELDS & body.keys():
                self.secrets.add(body[name])

    def gateway(self, *, user: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.gateway_key}"}
        if user is not None:
            headers["X-User-Id"] = user
        return headers

    async def issue(self) -> httpx.Response:
        """The casino gateway asks for a launch token for the test player."""
        return await self.request("POST", "/betlink/session", headers=self.gateway(user=self.player))

    async def launch_token(self) -> LaunchToken:
        return launch_token_of(await self.issue())

    async def authenticate(
        self,
        body: dict[str, Any] | bytes,
        *,
        key: str | None = None,
        api_key: str | None = None,
        twice: str | None = None,
    ) -> httpx.Response:
        """BetLink's call: the BetLink key and a fresh idempotency key unless told otherwise
        ("" leaves a header out; `twice` names a header to send two copies of)."""
        headers = [("Content-Type", "application/json")]
        if api_key != "":
            headers.append(("X-API-Key", self.betlink_key if api_key is None else api_key))
        if key != "":
            headers.append(("X-Idempotency-Key", key or new_key()))
        headers += [(name, value) for name, value in headers if name == twice]
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.request("POST", "/betlink/authenticate", headers=headers, content=content)

    async def exchange(self, launch: LaunchToken) -> dict[str, Any]:
        """A launch token exchanged with a fresh key: the 200 body, or Failed."""
        response = await self.authenticate(auth_body(launch))
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise Failed("200 for a fresh launch token", describe(response))
        return body

    async def introspect(self, token: str) -> httpx.Response:
        return await self.request(
            "POST",
            "/betlink/sessions/introspect",
            headers=self.gateway(),
            json={"operatorSessionToken": token},
        )

    async def block(self, *, blocked: bool = True) -> httpx.Response:
        return await self.request("PUT" if blocked else "DELETE", self.block_path(), headers=self.gateway())

    def block_path(self) -> str:
        return f"/players/{quote(self.player, safe='')}/block"

    async def race(
        self, method: str, path: str, requests: Sequence[tuple[Headers, bytes]]
    ) -> list[httpx.Response]:
        """Requests that reach the deployment at the same moment, each on its own new connection:
        every request is written but for its last byte, then the last bytes go out together. A
        race that a missing lock loses only now and then with ordinary concurrent requests (their
        arrivals spread over tens of milliseconds) is then lost nearly every time."""
        self.latencies.clear()
        target = self.url_for(path)
        url = httpx.URL(target if "://" in target else self.public(path))
        go = asyncio.Event()
        ready: list[asyncio.Future[None]] = [asyncio.get_running_loop().create_future() for _ in requests]
        calls = [
            self._raw(method, url, headers, body, ready=ready[n], go=go)
            for n, (headers, body) in enumerate(requests)
        ]
        tasks = [asyncio.ensure_future(call) for call in calls]
        try:
            async with asyncio.timeout(self.http.timeout.read or 10.0):
                await asyncio.gather(*ready)
            go.set()
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    async def _raw(
        self,
        method: str,
        url: httpx.URL,
        headers: Headers,
        body: bytes,
        *,
        ready: asyncio.Future[None],
        go: asyncio.Event,
    ) -> httpx.Response:
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        items = [*self.http.headers.items(), ("X-Request-ID", self.request_id()), *items]
        lines = [f"{method} {url.raw_path.decode()} HTTP/1.1", f"Host: {url.netloc.decode()}"]
        lines += [f"{name}: {value}" for name, value in items if name.lower() not in RAW_HOP_HEADERS]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        message = "\r\n".join(lines).encode("latin-1") + body
        tls = ssl.create_default_context() if url.scheme == "https" else None
        port = url.port or (443 if tls else 80)
        reader, writer = await asyncio.open_connection(url.host, port, ssl=tls)
        try:
            writer.write(message[:-1])
            await writer.drain()
            ready.set_result(None)
            await go.wait()
            started = time.perf_counter()
            writer.write(message[-1:])
            await writer.drain()
            raw = await reader.read()
            self.latencies.append(time.perf_counter() - started)
        finally:
            writer.close()
        response = parse_response(raw)
        self._remember_tokens(response)
        return response

    async def concurrently(self, calls: Iterable[Awaitable[httpx.Response]]) -> list[httpx.Response]:
        """Requests sent at once on separate connections; their latencies are kept for p50/p99."""
        self.latencies.clear()
        return list(await asyncio.gather(*calls))


RAW_HOP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding", "accept-encoding"})


def parse_response(raw: bytes) -> httpx.Response:
    """An HTTP/1.1 answer read to the end of a closed connection (Content-Length or chunked)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP answer: {status_line[:80]!r}")
    headers = [tuple(line.split(":", 1)) for line in header_lines if ":" in line]
    pairs = [(name.strip(), value.strip()) for name, value in headers]
    if any(name.lower() == "transfer-encoding" and "chunked" in value.lower() for name, value in pairs):
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        pairs = [(name, value) for name, value in pairs if name.lower() != "transfer-encoding"]
    else:
        length = next((int(value) for name, value in pairs if name.lower() == "content-length"), len(rest))
        body = rest[:length]
    return httpx.Response(int(parts[1]), headers=pairs, content=body)


def launch_token_of(response: httpx.Response) -> LaunchToken:
    """`/betlink/session`'s 201, or Failed."""
    body = json_or_none(response)
    if response.status_code != 201 or not isinstance(body, dict):
        raise Failed("POST /betlink/session: 201 with a launch token", describe(response))
    try:
        return LaunchToken(
            str(body["launchToken"]), str(body["userId"]), str(body["operatorId"]), time.monotonic()
        )
    except KeyError:
        raise Failed("launchToken, userId and operatorId", describe(response)) from None


def new_key() -> str:
    return str(uuid.uuid4())


def random_token() -> str:
    return secrets.token_urlsafe(16)


def auth_body(launch: LaunchToken, **overrides: str) -> dict[str, Any]:
    body = {
        "requestId": str(uuid.uuid4()),
        "userId": launch.user_id,
        "operatorId": launch.operator_id,
        "launchToken": launch.token,
        "authRequestedTimestamp": str(int(time.time() * 1000)),
    }
    body.update(overrides)
    return body


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def describe(response: httpx.Response) -> str:
    """Status, content type and body, with token fields masked and the body cut short."""
    body = json_or_none(response)
    if isinstance(body, dict):
        shown = json.dumps({k: MASK if k in TOKEN_FIELDS else v for k, v in body.items()}, ensure_ascii=False)
    else:
        shown = response.text
    if len(shown) > SHOWN_BODY_CHARS:
        shown = shown[:SHOWN_BODY_CHARS] + "..."
    content_type = response.headers.get("content-type", "no content type")
    return f"{response.status_code} {content_type} {shown}".rstrip()

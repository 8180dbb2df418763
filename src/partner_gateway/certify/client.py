"""The deployment under certification, reached over HTTP as the partners reach it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

MASK = "***"
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
    launch_token_ttl: float = 10.0
    parallel_same_key: int = 5
    parallel_keys: int = 5
    bidpaw: bool = False
    bidpaw_iframe_prefix: str | None = None
    bidpaw_wallet: BidpawWallet | None = None


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
    early_token: LaunchToken | None = None  # asked for at the start, for the expiry check
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
        response = await self.http.request(method, path, headers=items, **kwargs)
        self.latencies.append(time.perf_counter() - started)
        self._remember_tokens(response)
        return response

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

    async def concurrently(self, calls: Iterable[Awaitable[httpx.Response]]) -> list[httpx.Response]:
        """Requests sent at once on separate connections; their latencies are kept for p50/p99."""
        self.latencies.clear()
        return list(await asyncio.gather(*calls))


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

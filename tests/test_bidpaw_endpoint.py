"""GET /bidpaw/open-session through the whole app: the sandbox on a real socket, respx, raw servers."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
import structlog
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from partner_gateway.bidpaw.client import MAX_ATTEMPTS, MAX_BODY_BYTES
from partner_gateway.bidpaw.endpoints import CURRENCIES
from partner_gateway.bidpaw.sandbox import (
    MISSING_SIGN,
    SIGNATURE_INVALID,
    ReceivedRequest,
    bidpaw_error,
    create_sandbox_app,
)
from partner_gateway.bidpaw.signing import sign
from partner_gateway.db import utc_now
from partner_gateway.logs import configure_logging
from tests.conftest import GATEWAY_HEADERS, app_of

CLIENT_ID = "casino-42"
SECRET = "bidpaw-secret-0001"
GAME_ID = "game-42"
RESPX_API = "https://bidpaw.test"
NICK = 'Jöhn "🎰" \\/'
PROBLEM = "application/problem+json"
IFRAME = "https://lobby.bidpaw.test/auctions?token=tok-abc&session=ses-def&casinoId=casino-42"

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Sandbox:
    url: str
    app: Starlette

    def last_sign(self) -> str:
        received: ReceivedRequest = self.app.state.received[-1]
        return dict(received.headers)["sign"]

    def signs(self) -> list[str]:
        received: list[ReceivedRequest] = list(self.app.state.received)
        return [value for request in received for name, value in request.headers if name == "sign"]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The BidPaw sandbox under uvicorn on a real 127.0.0.1 socket, in a thread of its own."""
    app = create_sandbox_app(client_id=CLIENT_ID, secret_key=SECRET, restricted_countries=["US"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the sandbox did not start"
        time.sleep(0.01)
    yield Sandbox(url=f"http://127.0.0.1:{sock.getsockname()[1]}", app=app)
    server.should_exit = True
    thread.join(10)
    sock.close()


def bidpaw_settings(
    api_url: str, *, timeout: float = 3, secret: str = SECRET, **extra: Any
) -> dict[str, Any]:
    return {
        "bidpaw_api_url": api_url,
        "bidpaw_client_id": CLIENT_ID,
        "bidpaw_secret_key": secret,
        "bidpaw_game_id": GAME_ID,
        "bidpaw_timeout_seconds": timeout,
        **extra,
    }


async def open_session(
    client: httpx.AsyncClient,
    user_id: str = "player-1",
    *,
    nick: str | None = None,
    authorized: bool = True,
    headers: list[tuple[bytes, bytes]] | None = None,
    query: list[tuple[str, str]] | None = None,
) -> httpx.Response:
    sent = [(b"X-User-Id", user_id.encode()), *(headers or [])]
    if authorized:
        sent.append((b"Authorization", GATEWAY_HEADERS["Authorization"].encode()))
    params = [("nick", nick)] if nick is not None else []
    return await client.get("/bidpaw/open-session", params=[*params, *(query or [])], headers=sent)


def problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail}


def bad_gateway(detail: str) -> dict[str, Any]:
    return problem(502, "Bad Gateway", detail)


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A bare TCP server in this loop; the event is set once a connection has been closed by us."""
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            closed.set()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", closed


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(4096):  # until our client hangs up
        pass


async def drips(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # A byte every 0.1 s: every read completes well within httpx's per-chunk read timeout.
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(600):
        writer.write(b" ")
        await writer.drain()
        if reader.at_eof():
            return
        await asyncio.sleep(0.1)


async def streams_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 8192
    for _ in range(100_000):  # 800 MB if nobody stops reading
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connecting to it is refused


class TestOpensASession:
    async def test_answers_the_sandboxs_iframe_url_uncached(
        self, make_client: ClientFactory, sandbox: Sandbox
    ) -> None:
        client = await make_client(**bidpaw_settings(sandbox.url))
        response = await open_session(client, nick=NICK)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"iframeURL"}
        parts = urlsplit(body["iframeURL"])
        assert (parts.scheme, parts.netloc, parts.path) == ("https", "sandbox.bidpaw.invalid", "/en/auctions")
        assert parse_qs(parts.query)["casinoId"] == [CLIENT_ID]

    async def test_sends_bidpaw_exactly_the_documented_request(
        self, make_client: ClientFactory, sandbox: Sandbox
    ) -> None:
        client = await make_client(**bidpaw_settings(sandbox.url))
        assert (await open_session(client, "Ülrich 7", nick=NICK)).status_code == 200
        received = sandbox.app.state.received[-1]
        assert (received.method, received.path) == ("GET", "/api/casino/open-session/")
        assert received.query == (
            b"clientId=casino-42&nick=J%C3%B6hn%20%22%F0%9F%8E%B0%22%20%5C%2F&userId=%C3%9Clrich%207"
            b"&gameId=game-42"
        )
        headers = dict(received.headers)
        params = [("clientId", CLIENT_ID), ("nick", NICK), ("userId", "Ülrich 7"), ("gameId", GAME_ID)]
        assert headers["sign"] == sign(params=params, secret=SECRET)
        assert headers["content-type"] == "application/json; charset=UTF-8"

    async def test_an_empty_nick_is_treated_as_absent(
        self, make_client: ClientFactory, sandbox: Sandbox
    ) -> None:
        client = await make_client(**bidpaw_settings(sandbox.url))
        assert (await open_session(client, "42", nick="")).status_code == 200
        assert sandbox.app.state.received[-1].query == b"clientId=casino-42&userId=42&gameId=game-42"

    async def test_sends_todays_parameters_in_the_contracts_order(
        self, make_client: ClientFactory, sandbox: Sandbox
    ) -> None:
        client = await make_client(**bidpaw_settings(sandbox.url, bidpaw_allowed_countries="de,AT"))
        response = await open_session(
            client,
            "42",
            nick="n",
            headers=[(b"X-User-Country", b"de"), (b"X-User-Currency", b"eur")],
            query=[("lang", "de")],
        )
        assert response.status_code == 200, response.text
        received = sandbox.app.state.received[-1]
        assert received.query == (
            b"clientId=casino-42&nick=n&userId=42&lang=de&currency=EUR&country=DE&gameId=game-42"
            b"&allowedCountries=DE%2CAT"
        )
        params = [
            ("clientId", CLIENT_ID),
            ("nick", "n"),
            ("userId", "42"),
            ("lang", "de"),
            ("currency", "EUR"),
            ("country", "DE"),
            ("gameId", GAME_ID),
            ("allowedCountries", "DE,AT"),
        ]
        assert dict(received.headers)["sign"] == sign(params=params, secret=SECRET)
        assert urlsplit(response.json()["iframeURL"]).path == "/de/auctions"

    async def test_a_restricted_country_gets_bidpaws_region_restriction_page_as_it_is(
        self, make_client: ClientFactory, sandbox: Sandbox
    ) -> None:
        client = await make_client(**bidpaw_settings(sandbox.url))
        response = await open_session(client, headers=[(b"X-User-Country", b"us")], query=[("lang", "fr")])
        assert response.status_code == 200
        assert response.json() == {"iframeURL": sandbox.app.state.opened[-1].iframe_url}
        assert urlsplit(response.json()["iframeURL"]).path == "/fr/region-restriction"

    async def test_does_not_hold_a_database_connection_while_bidpaw_thinks(
        self, make_client: ClientFactory
    ) -> None:
        async with raw_server(never_answers) as (url, _):
            client = await make_client(**bidpaw_settings(url, timeout=2), db_pool_size=1, db_max_overflow=0)
            waiting = asyncio.create_task(open_session(client))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            other = await client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "p2"})
            assert other.status_code == 201
            assert time.monotonic() - started < 1
            assert (await waiting).status_code == 504


class TestChecksInOrder:
    async def test_without_a_gateway_key_is_401(self, make_client: ClientFactory) -> None:
        client = await make_client()
        response = await open_session(client, authorized=False)
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
        assert response.json() == problem(
            401, "Unauthorized", "missing or invalid gateway API key: send Authorization: Bearer <key>"
        )

    async def test_without_a_user_id_is_400(self, make_client: ClientFactory) -> None:
        client = await make_client()
        response = await client.get("/bidpaw/open-session", headers=GATEWAY_HEADERS)
        assert response.status_code == 400
        assert response.json() == problem(400, "Bad Request", "missing X-User-Id header")

    async def test_a_blocked_player_is_403_before_any_call_to_bidpaw(
        self, make_client: ClientFactory, engine: AsyncEngine
    ) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO players (user_id, blocked, updated_at) VALUES ('bad-1', true, now())")
            )
        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(host="bidpaw.test").respond(200, json={"iframeURL": IFRAME})
            for settings in (bidpaw_settings(RESPX_API), {}):  # configured or not: 403 first
                client = await make_client(**settings)
                response = await open_session(client, "bad-1")
                assert response.status_code == 403
                assert response.json() == problem(403, "Player blocked", "the player is blocked")
        assert route.call_count == 0

    async def test_an_unblocked_player_gets_through(
        self, make_client: ClientFactory, engine: AsyncEngine
    ) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO players (user_id, blocked, updated_at) VALUES ('ok-1', false, now())")
            )
        with respx.mock(assert_all_called=False) as mock:
            mock.get(host="bidpaw.test").respond(200, json={"iframeURL": IFRAME})
            client = await make_client(**bidpaw_settings(RESPX_API))
            assert (await open_session(client, "ok-1")).json() == {"iframeURL": IFRAME}

    @pytest.mark.parametrize(
        "missing",
        [
            pytest.param({"bidpaw_api_url": None}, id="nothing"),
            pytest.param({"bidpaw_game_id": None}, id="no BIDPAW_GAME_ID"),
            pytest.param({"bidpaw_game_id": ""}, id="empty BIDPAW_GAME_ID"),
        ],
    )
    async def test_bidpaw_not_configured_is_503(
        self, make_client: ClientFactory, missing: dict[str, Any]
    ) -> None:
        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(host="bidpaw.test").respond(200, json={"iframeURL": IFRAME})
            client = await make_client(**{**bidpaw_settings(RESPX_API), **missing})
            response = await open_session(client)
        assert response.status_code == 503
        assert response.json() == problem(
            503,
            "Service Unavailable",
            "BidPaw is not configured (BIDPAW_API_URL, BIDPAW_CLIENT_ID, BIDPAW_SECRET_KEY, BIDPAW_GAME_ID)",
        )
        assert route.call_count == 0

    async def test_a_nick_over_256_characters_is_400(self, make_client: ClientFactory) -> None:
        client = await make_client(**bidpaw_settings(RESPX_API))
        response = await open_session(client, nick="x" * 257)
        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM


COUNTRY_RULE = "X-User-Country must be an ISO 3166-1 alpha-2 code: two letters, e.g. DE"
CURRENCY_RULE = "X-User-Currency must be one of the 42 currencies BidPaw supports, e.g. EUR"
LANG_RULE = "lang must be 2 to 8 ASCII letters and hyphens, e.g. en or pt-BR"
H = list[tuple[bytes, bytes]]
Q = list[tuple[str, str]]

# Each row: headers and query of a request that must be a 400 with this detail, before BidPaw.
REFUSED: list[Any] = [
    pytest.param(
        [(b"X-User-Country", b"")],
        [],
        "X-User-Country must not be empty: leave it out when the value is not known",
        id="empty country",
    ),
    pytest.param([(b"X-User-Country", b"DEU")], [], COUNTRY_RULE, id="three-letter country"),
    pytest.param([(b"X-User-Country", b"D")], [], COUNTRY_RULE, id="one-letter country"),
    pytest.param([(b"X-User-Country", b"D1")], [], COUNTRY_RULE, id="digit in country"),
    pytest.param([(b"X-User-Country", b"D ")], [], COUNTRY_RULE, id="space in country"),
    pytest.param([(b"X-User-Country", "Dİ".encode())], [], COUNTRY_RULE, id="non-ascii country"),
    pytest.param([(b"X-User-Country", b"\xff\xfe")], [], COUNTRY_RULE, id="not utf-8 country"),
    pytest.param(
        [(b"X-User-Currency", b"")],
        [],
        "X-User-Currency must not be empty: leave it out when the value is not known",
        id="empty currency",
    ),
    pytest.param([(b"X-User-Currency", b"XXX")], [], CURRENCY_RULE, id="unsupported currency"),
    pytest.param([(b"X-User-Currency", b"BTC")], [], CURRENCY_RULE, id="crypto currency"),
    pytest.param([(b"X-User-Currency", b"EU")], [], CURRENCY_RULE, id="short currency"),
    pytest.param(
        [(b"X-User-Currency", "\u0131nr".encode())], [], CURRENCY_RULE, id="dotless i upper-cases to INR"
    ),
    pytest.param([(b"X-User-Currency", b"US D")], [], CURRENCY_RULE, id="space in currency"),
    pytest.param([], [("nick", "a"), ("nick", "b")], "nick must be sent at most once", id="repeated nick"),
    pytest.param([], [("nick", "x" * 257)], "nick must be at most 256 characters", id="long nick"),
    pytest.param([], [("lang", "e")], LANG_RULE, id="short lang"),
    pytest.param([], [("lang", "abcdefghi")], LANG_RULE, id="long lang"),
    pytest.param([], [("lang", "en_US")], LANG_RULE, id="underscore lang"),
    pytest.param([], [("lang", "\u0440\u0443")], LANG_RULE, id="non-ascii lang"),
    pytest.param([], [("lang", "de"), ("lang", "fr")], "lang must be sent at most once", id="repeated lang"),
    pytest.param(
        [], [("lang", "de"), ("lang", "")], "lang must be sent at most once", id="repeated lang, one empty"
    ),
    # Several at once: the first in the contract's order decides.
    pytest.param(
        [(b"X-User-Country", b"1"), (b"X-User-Currency", b"XXX")],
        [("lang", "x")],
        COUNTRY_RULE,
        id="country first",
    ),
    pytest.param(
        [(b"X-User-Currency", b"XXX")],
        [("nick", "x" * 257), ("lang", "x")],
        CURRENCY_RULE,
        id="currency before nick",
    ),
    pytest.param(
        [], [("lang", "x"), ("nick", "x" * 257)], "nick must be at most 256 characters", id="nick before lang"
    ),
]


class TestTodaysValidation:
    @pytest.mark.parametrize(("headers", "query", "detail"), REFUSED)
    async def test_bad_input_is_400_before_the_block_check_and_bidpaw(
        self, make_client: ClientFactory, engine: AsyncEngine, headers: H, query: Q, detail: str
    ) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO players (user_id, blocked, updated_at) VALUES ('bad-1', true, now())")
            )
        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(host="bidpaw.test").respond(200, json={"iframeURL": IFRAME})
            for settings in (bidpaw_settings(RESPX_API), {}):  # before the block (403) and the 503
                client = await make_client(**settings)
                response = await open_session(client, "bad-1", headers=headers, query=query)
                assert response.status_code == 400, response.text
                assert response.headers["content-type"] == PROBLEM
                assert response.json() == problem(400, "Bad Request", detail)
        assert route.call_count == 0

    async def test_the_user_id_is_checked_before_country_and_currency(
        self, make_client: ClientFactory
    ) -> None:
        client = await make_client(**bidpaw_settings(RESPX_API))
        response = await client.get(
            "/bidpaw/open-session",
            headers={**GATEWAY_HEADERS, "X-User-Country": "1", "X-User-Currency": "XXX"},
        )
        assert response.json() == problem(400, "Bad Request", "missing X-User-Id header")

    async def test_the_gateway_key_is_checked_first(self, make_client: ClientFactory) -> None:
        client = await make_client(**bidpaw_settings(RESPX_API))
        response = await open_session(client, authorized=False, headers=[(b"X-User-Country", b"1")])
        assert response.status_code == 401

    @pytest.mark.parametrize("currency", sorted(CURRENCIES))
    async def test_each_of_bidpaws_42_currencies_in_any_case_goes_out_upper_case(
        self, make_client: ClientFactory, currency: str
    ) -> None:
        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(host="bidpaw.test").respond(200, json={"iframeURL": IFRAME})
            client = await make_client(**bidpaw_settings(RESPX_API))
            response = await open_session(client, headers=[(b"X-User-Currency", currency.lower().encode())])
        assert response.status_code == 200
        assert parse_qs(route.calls[0].request.url.query.decode())["currency"] == [currency]

    def test_the_list_is_bidpaws_42(self) -> None:
        assert len(CURRENCIES) == 42
        assert all(code.isascii() and code.isupper() and code.isalpha() for code in CURRENCIES)

    @pytest.mark.parametrize("lang", ["en", "pt-BR", "zh-Hant", "--", "ABCDEFGH"])
    async def test_lang_is_passed_as_given(self, make_client: ClientFactory, lang: str) -> None:
        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(host="bidpaw.test").respond(200, json={"iframeURL": IFRAME})
            client = await make_client(**bidpaw_settings(RESPX_API))
            assert (await open_session(client, query=[("lang", lang)])).status_code == 200
        assert parse_qs(route.calls[0].request.url.query.decode())["lang"] == [lang]

    async def test_an_empty_lang_or_nick_is_absent(self, make_client: ClientFactory) -> None:
        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(host="bidpaw.test").respond(200, json={"iframeURL": IFRAME})
            client = await make_client(**bidpaw_settings(RESPX_API))
            response = await open_session(client, "42", query=[("lang", ""), ("nick", "")])
            assert response.status_code == 200
        assert route.calls[0].request.url.query == b"clientId=casino-42&userId=42&gameId=game-42"


HTML = b"<!doctype html><html><body>502 Bad Gateway</body></html>"
NOT_JSON = "BidPaw's answer is not JSON"
NO_FIELD = "BidPaw's answer has no iframeURL string"
NOT_HTTPS = "BidPaw's iframeURL is not an absolute https URL"
OVERSIZE = b'{"iframeURL": "https://lobby.bidpaw.test/", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
UPSTREAM_FAILURES = [
    pytest.param(
        400,
        json.dumps(bidpaw_error(SIGNATURE_INVALID)).encode(),
        "BidPaw rejected the request (HTTP 400)",
        id="4xx",
    ),
    pytest.param(404, b"", "BidPaw rejected the request (HTTP 404)", id="404"),
    pytest.param(500, b"", "BidPaw failed (HTTP 500)", id="5xx"),
    pytest.param(503, HTML, "BidPaw failed (HTTP 503)", id="503 html"),
    pytest.param(200, HTML, NOT_JSON, id="html"),
    pytest.param(200, b'{"iframeURL": "https://lobby.bidpaw.test/a?token=', NOT_JSON, id="truncated json"),
    pytest.param(200, b"", NOT_JSON, id="empty"),
    pytest.param(200, b"\xff\xfe{}", NOT_JSON, id="not utf-8"),
    pytest.param(200, b'["https://lobby.bidpaw.test/"]', "BidPaw's answer is not a JSON object", id="array"),
    pytest.param(200, b'{"url": "https://lobby.bidpaw.test/"}', NO_FIELD, id="missing field"),
    pytest.param(200, b'{"iframeURL": null}', NO_FIELD, id="null field"),
    pytest.param(200, b'{"iframeURL": "javascript:alert(document.cookie)"}', NOT_HTTPS, id="javascript url"),
    pytest.param(200, b'{"iframeURL": "https://x.test/a?t=\\ud800"}', NOT_HTTPS, id="lone surrogate"),
    pytest.param(200, b'{"iframeURL": "/auctions?token=t"}', NOT_HTTPS, id="relative url"),
    pytest.param(
        200, b'{"iframeURL": "http://lobby.bidpaw.test/a?token=t"}', NOT_HTTPS, id="http url, https api"
    ),
    pytest.param(200, OVERSIZE, f"BidPaw's answer is larger than {MAX_BODY_BYTES} bytes", id="oversize"),
]


class TestUpstreamFailures:
    @pytest.mark.parametrize(("status", "body", "detail"), UPSTREAM_FAILURES)
    async def test_are_502_with_a_detail_that_echoes_nothing(
        self, make_client: ClientFactory, status: int, body: bytes, detail: str
    ) -> None:
        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(host="bidpaw.test").respond(status, content=body)
            client = await make_client(**bidpaw_settings(RESPX_API))
            response = await open_session(client)
        assert response.status_code == 502
        assert response.headers["content-type"] == PROBLEM
        assert response.json() == bad_gateway(detail)
        assert route.call_count == 1

    async def test_refused_on_every_attempt_is_502(self, make_client: ClientFactory) -> None:
        client = await make_client(**bidpaw_settings(f"http://127.0.0.1:{free_port()}"))
        started = time.monotonic()
        response = await open_session(client)
        assert time.monotonic() - started < 2
        assert response.status_code == 502
        assert response.json() == bad_gateway(f"BidPaw could not be reached ({MAX_ATTEMPTS} attempts)")

    async def test_refused_until_the_budget_is_spent_is_still_502(self, make_client: ClientFactory) -> None:
        client = await make_client(**bidpaw_settings(f"http://127.0.0.1:{free_port()}", timeout=0.2))
        started = time.monotonic()
        response = await open_session(client)
        assert time.monotonic() - started < 1.5  # the 0.2 s budget, with room for a busy runner
        assert response.status_code == 502
        assert response.json()["detail"].startswith("BidPaw could not be reached within 0.2 s")

    async def test_an_endless_body_is_cut_off_at_the_cap(self, make_client: ClientFactory) -> None:
        async with raw_server(streams_forever) as (url, closed):
            client = await make_client(**bidpaw_settings(url, timeout=5))
            started = time.monotonic()
            response = await open_session(client)
            assert time.monotonic() - started < 1
            assert response.json() == bad_gateway(f"BidPaw's answer is larger than {MAX_BODY_BYTES} bytes")
            await asyncio.wait_for(closed.wait(), 2)


class TestDeadline:
    @pytest.mark.parametrize("handler", [never_answers, drips], ids=["never answers", "drips bytes"])
    async def test_is_504_within_the_budget_and_leaves_nothing_running(
        self, make_client: ClientFactory, handler: Handler
    ) -> None:
        async with raw_server(handler) as (url, closed):
            client = await make_client(**bidpaw_settings(url, timeout=1))
            tasks_before = asyncio.all_tasks()
            started = time.monotonic()
            response = await open_session(client)
            elapsed = time.monotonic() - started
            await asyncio.wait_for(closed.wait(), 1)  # our side hung up: BidPaw's handler returned
        assert 1 <= elapsed < 2.5  # the 1 s budget, with room for a busy runner
        assert response.status_code == 504
        assert response.json() == problem(504, "Gateway Timeout", "BidPaw did not answer within 1 s")
        await asyncio.sleep(0.05)
        assert asyncio.all_tasks() - tasks_before - {asyncio.current_task()} == set()


class TestOpenApi:
    async def test_describes_the_route_with_every_status(self, make_client: ClientFactory) -> None:
        spec = (await (await make_client()).get("/openapi.json")).json()
        operation = spec["paths"]["/bidpaw/open-session"]["get"]
        assert set(operation["responses"]) >= {"200", "400", "401", "403", "502", "503", "504"}
        assert {param["name"] for param in operation["parameters"]} >= {"nick", "X-User-Id"}
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/OpenSessionResponse"}
        assert set(spec["components"]["schemas"]["OpenSessionResponse"]["properties"]) == {"iframeURL"}


@pytest.fixture
def json_logs() -> Iterator[Callable[[], str]]:
    """The service's JSON log pipeline at DEBUG, writing to a buffer instead of stdout."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=buffer)
    yield buffer.getvalue
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


class TestLogs:
    async def test_one_line_per_call_and_never_a_secret_sign_or_iframe_token(
        self, make_client: ClientFactory, sandbox: Sandbox, json_logs: Callable[[], str]
    ) -> None:
        forbidden = {SECRET}
        outcomes: list[tuple[str, int | None]] = []

        good = await make_client(**bidpaw_settings(sandbox.url))
        for nick in (NICK, None):
            iframe = (await open_session(good, nick=nick)).json()["iframeURL"]
            query = parse_qs(urlsplit(iframe).query)
            forbidden |= {*query["token"], *query["session"]}
            forbidden |= {urlsplit(iframe).query, sandbox.last_sign()}
            outcomes.append(("ok", 200))

        wrong_secret = await make_client(**bidpaw_settings(sandbox.url, secret="another-secret-0002"))
        assert (await open_session(wrong_secret)).status_code == 502
        forbidden |= {"another-secret-0002", sandbox.last_sign()}
        outcomes.append(("rejected", 400))

        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(host="bidpaw.test")
            route.side_effect = [
                httpx.ConnectError("refused"),
                httpx.Response(200, json={"iframeURL": IFRAME}),
                httpx.Response(500, text="Internal Server Error"),
                httpx.Response(200, json={"iframeURL": "javascript:alert(1)//?token=tok-js"}),
                httpx.Response(200, json={"iframeURL": "http://lobby.bidpaw.test/?token=tok-http"}),
            ]
            client = await make_client(**bidpaw_settings(RESPX_API))
            for expected in (
                ("ok", 200),
                ("server_error", 500),
                ("invalid_response", 200),
                ("invalid_response", 200),
            ):
                await open_session(client)
                outcomes.append(expected)
            forbidden |= {call.request.headers["sign"] for call in route.calls}
            forbidden |= {"tok-abc", "ses-def", "tok-js", "tok-http"}

        async with raw_server(never_answers) as (url, _):
            assert (
                await open_session(await make_client(**bidpaw_settings(url, timeout=0.5)))
            ).status_code == 504
            outcomes.append(("timeout", None))
        unreachable = await make_client(**bidpaw_settings(f"http://127.0.0.1:{free_port()}"))
        assert (await open_session(unreachable)).status_code == 502
        outcomes.append(("unreachable", None))

        output = json_logs()
        lines = [json.loads(line) for line in output.splitlines()]
        calls = [line for line in lines if line["event"] == "bidpaw.open_session"]
        assert [(line["outcome"], line["bidpaw_status"]) for line in calls] == outcomes
        assert all(isinstance(line["latency_ms"], float) and line["attempts"] >= 1 for line in calls)
        assert all("[redacted]" not in json.dumps(line) for line in calls)  # nothing needed masking
        leaked = {secret for secret in forbidden if secret in output}
        assert leaked == set()


async def bidpaw_sessions(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT * FROM bidpaw_sessions ORDER BY id"))
        return [dict(row._mapping) for row in rows]


class TestSessionRecord:
    async def test_every_200_records_the_player_game_currency_and_session_never_the_token(
        self, make_client: ClientFactory, sandbox: Sandbox, engine: AsyncEngine
    ) -> None:
        client = await make_client(**bidpaw_settings(sandbox.url))
        first = await open_session(client, "Ülrich 7", headers=[(b"X-User-Currency", b"eur")])
        first_opened = sandbox.app.state.opened[-1]
        second = await open_session(client, "Ülrich 7")
        second_opened = sandbox.app.state.opened[-1]
        assert (first.status_code, second.status_code) == (200, 200)
        rows = await bidpaw_sessions(engine)
        assert [(r["user_id"], r["game_id"], r["currency"], r["session"]) for r in rows] == [
            ("Ülrich 7", GAME_ID, "EUR", first_opened.session),
            ("Ülrich 7", GAME_ID, None, second_opened.session),
        ]
        for row in rows:
            assert row["created_at"] == row["last_used_at"]
            assert abs((row["created_at"] - utc_now()).total_seconds()) < 60
        tokens = [parse_qs(urlsplit(r.json()["iframeURL"]).query)["token"][0] for r in (first, second)]
        stored = json.dumps(rows, default=str)
        assert not any(token in stored for token in tokens)
        assert first_opened.session != second_opened.session

    async def test_an_iframe_url_without_a_session_is_recorded_without_one(
        self, make_client: ClientFactory, engine: AsyncEngine
    ) -> None:
        with respx.mock(assert_all_called=False) as mock:
            mock.get(host="bidpaw.test").respond(
                200, json={"iframeURL": "https://lobby.bidpaw.test/a?token=t"}
            )
            client = await make_client(**bidpaw_settings(RESPX_API))
            assert (await open_session(client, "p-9")).status_code == 200
        assert [(r["user_id"], r["session"]) for r in await bidpaw_sessions(engine)] == [("p-9", None)]

    async def test_no_failure_is_recorded(
        self, make_client: ClientFactory, sandbox: Sandbox, engine: AsyncEngine
    ) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO players (user_id, blocked, updated_at) VALUES ('bad-1', true, now())")
            )
        good = await make_client(**bidpaw_settings(sandbox.url))
        assert (await open_session(good, headers=[(b"X-User-Currency", b"XXX")])).status_code == 400
        assert (await open_session(good, "bad-1")).status_code == 403
        assert (await open_session(await make_client())).status_code == 503
        wrong = await make_client(**bidpaw_settings(sandbox.url, secret="another-secret-0002"))
        assert (await open_session(wrong)).status_code == 502
        with respx.mock(assert_all_called=False) as mock:
            mock.get(host="bidpaw.test").respond(200, json={"iframeURL": "javascript:alert(1)"})
            assert (await open_session(await make_client(**bidpaw_settings(RESPX_API)))).status_code == 502
        async with raw_server(never_answers) as (url, _):
            slow = await make_client(**bidpaw_settings(url, timeout=0.5))
            assert (await open_session(slow)).status_code == 504
        assert await bidpaw_sessions(engine) == []


async def tamper(request: httpx.Request, *, drop: str | None = None, header: str | None = None) -> None:
    """What a broken proxy between us and BidPaw might do: drop a parameter or a header."""
    if header is not None:
        del request.headers[header]
    if drop is not None:
        kept = [part for part in request.url.query.split(b"&") if not part.startswith(drop.encode() + b"=")]
        request.url = request.url.copy_with(query=b"&".join(kept))


class TestBidPawsReasonsReachTheLogLine:
    @pytest.mark.parametrize(
        ("hook", "secret", "message"),
        [
            pytest.param({"drop": "gameId"}, SECRET, "Required parameters missing: gameId", id="missing"),
            pytest.param({"header": "sign"}, SECRET, MISSING_SIGN, id="no sign"),
            pytest.param({}, "another-secret-0002", SIGNATURE_INVALID, id="bad sign"),
        ],
    )
    async def test_each_of_bidpaws_400_messages_and_nothing_secret(
        self,
        make_client: ClientFactory,
        sandbox: Sandbox,
        json_logs: Callable[[], str],
        hook: dict[str, str],
        secret: str,
        message: str,
    ) -> None:
        client = await make_client(**bidpaw_settings(sandbox.url, secret=secret))
        http: httpx.AsyncClient = app_of(client).state.bidpaw._http
        http.event_hooks = {"request": [lambda request: tamper(request, **hook)]}
        response = await open_session(client, headers=[(b"X-User-Currency", b"EUR")], query=[("lang", "de")])
        assert response.status_code == 502
        assert response.json() == bad_gateway("BidPaw rejected the request (HTTP 400)")
        output = json_logs()
        (line,) = [json.loads(line) for line in output.splitlines() if '"bidpaw.open_session"' in line]
        assert (line["outcome"], line["bidpaw_status"], line["bidpaw_message"]) == ("rejected", 400, message)
        assert line["detail"] == "BidPaw rejected the request (HTTP 400)"
        for forbidden in (SECRET, "another-secret-0002", *sandbox.signs()):
            assert forbidden not in output

"""BidPawClient against respx: the wire request, retries, redirects and response checks."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import REGISTRY

from partner_gateway.bidpaw.client import (
    MAX_ATTEMPTS,
    MAX_BODY_BYTES,
    MAX_ERROR_BODY_BYTES,
    BidPawBadGateway,
    BidPawClient,
    Outcome,
    bidpaw_message,
    encode_query,
    open_session_params,
)
from partner_gateway.bidpaw.sandbox import is_valid, query_params
from partner_gateway.bidpaw.signing import sign
from tests.conftest import make_settings

API = "https://bidpaw.test"
CLIENT_ID = "casino-42"
SECRET = "bidpaw-secret-0001"
IFRAME = "https://lobby.bidpaw.test/auctions?token=tok-abc&session=ses-def&casinoId=casino-42"
OK = {"iframeURL": IFRAME}
NICK = 'Jöhn "🎰" \\/'
GAME_ID = "game-7"


def bidpaw(http: httpx.AsyncClient, **overrides: Any) -> BidPawClient:
    values: dict[str, Any] = {
        "bidpaw_api_url": API,
        "bidpaw_client_id": CLIENT_ID,
        "bidpaw_secret_key": SECRET,
        "bidpaw_game_id": GAME_ID,
        "bidpaw_timeout_seconds": 3,
    }
    values.update(overrides)
    return BidPawClient(http, settings=make_settings("postgresql+asyncpg://unused/unused", **values))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(3)) as client:
        yield client


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def calls(route: respx.Route) -> list[httpx.Request]:
    return [call.request for call in route.calls]


def signed_as_bidpaw_checks(request: httpx.Request) -> bool:
    params = query_params(request.url.query)
    return params is not None and is_valid(
        params, request.headers.get("sign"), client_id=CLIENT_ID, secret_key=SECRET
    )


class TestWireRequest:
    async def test_path_query_order_encoding_and_headers(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        route = mock.get(host="bidpaw.test").respond(200, json=OK)
        assert await bidpaw(http).open_session(user_id="player 1/ü", nick=NICK) == IFRAME
        (request,) = calls(route)
        assert request.method == "GET"
        assert request.url.raw_path == (
            b"/api/casino/open-session/?clientId=casino-42"
            b"&nick=J%C3%B6hn%20%22%F0%9F%8E%B0%22%20%5C%2F&userId=player%201%2F%C3%BC&gameId=game-7"
        )
        params = [("clientId", CLIENT_ID), ("nick", NICK), ("userId", "player 1/ü"), ("gameId", GAME_ID)]
        assert request.headers["sign"] == sign(params=params, secret=SECRET)
        assert request.headers["content-type"] == "application/json; charset=UTF-8"
        assert request.content == b""
        assert signed_as_bidpaw_checks(request)

    @pytest.mark.parametrize("nick", [None, ""])
    async def test_an_absent_or_empty_nick_is_neither_sent_nor_signed(
        self, http: httpx.AsyncClient, mock: respx.MockRouter, nick: str | None
    ) -> None:
        route = mock.get(host="bidpaw.test").respond(200, json=OK)
        await bidpaw(http).open_session(user_id="42", nick=nick)
        (request,) = calls(route)
        assert request.url.query == b"clientId=casino-42&userId=42&gameId=game-7"
        assert request.headers["sign"] == sign(
            params=[("clientId", CLIENT_ID), ("userId", "42"), ("gameId", GAME_ID)], secret=SECRET
        )

    async def test_every_parameter_in_the_contracts_order_upper_casing_the_codes(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        route = mock.get(host="bidpaw.test").respond(200, json=OK)
        client = bidpaw(http, bidpaw_allowed_countries="us, gb ,De", bidpaw_game_id="gämé 1")
        await client.open_session(user_id="42", nick="n", lang="pt-BR", currency="eur", country="de")
        (request,) = calls(route)
        params = [
            ("clientId", CLIENT_ID),
            ("nick", "n"),
            ("userId", "42"),
            ("lang", "pt-BR"),
            ("currency", "EUR"),
            ("country", "DE"),
            ("gameId", "gämé 1"),
            ("allowedCountries", "US,GB,DE"),
        ]
        assert request.url.query == (
            b"clientId=casino-42&nick=n&userId=42&lang=pt-BR&currency=EUR&country=DE"
            b"&gameId=g%C3%A4m%C3%A9%201&allowedCountries=US%2CGB%2CDE"
        )
        assert request.headers["sign"] == sign(params=params, secret=SECRET)
        assert signed_as_bidpaw_checks(request)

    @pytest.mark.parametrize(("lang", "currency", "country"), [(None, None, None), ("", "", "")])
    async def test_absent_or_empty_optional_values_are_neither_sent_nor_signed(
        self,
        http: httpx.AsyncClient,
        mock: respx.MockRouter,
        lang: str | None,
        currency: str | None,
        country: str | None,
    ) -> None:
        route = mock.get(host="bidpaw.test").respond(200, json=OK)
        await bidpaw(http).open_session(
            user_id="42", nick=None, lang=lang, currency=currency, country=country
        )
        assert calls(route)[0].url.query == b"clientId=casino-42&userId=42&gameId=game-7"

    async def test_keeps_a_path_prefix_of_the_api_url(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        route = mock.get(host="bidpaw.test").respond(200, json=OK)
        await bidpaw(http, bidpaw_api_url=f"{API}/v1/").open_session(user_id="42", nick=None)
        assert calls(route)[0].url.path == "/v1/api/casino/open-session/"

    def test_the_query_leaves_only_unreserved_characters_unencoded(self) -> None:
        params = open_session_params(client_id="a-b_c.d~e", user_id="&=+?#%/", nick="*!'()", game_id="g")
        assert encode_query(params) == (
            "clientId=a-b_c.d~e&nick=%2A%21%27%28%29&userId=%26%3D%2B%3F%23%25%2F&gameId=g"
        )


class TestRetries:
    async def test_a_refused_connect_then_success_takes_two_validly_signed_attempts(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        route = mock.get(host="bidpaw.test")
        route.side_effect = [httpx.ConnectError("refused"), httpx.Response(200, json=OK)]
        assert await bidpaw(http).open_session(user_id="42", nick=NICK) == IFRAME
        assert route.call_count == 2
        assert all(signed_as_bidpaw_checks(request) for request in calls(route))

    @pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow connect")])
    async def test_gives_up_after_every_attempt_failed_to_connect(
        self, http: httpx.AsyncClient, mock: respx.MockRouter, error: Exception
    ) -> None:
        route = mock.get(host="bidpaw.test").mock(side_effect=error)
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert raised.value.outcome is Outcome.UNREACHABLE
        assert raised.value.detail == f"BidPaw could not be reached ({MAX_ATTEMPTS} attempts)"
        assert route.call_count == MAX_ATTEMPTS

    @pytest.mark.parametrize(
        "error",
        [httpx.ReadError("reset"), httpx.WriteError("broken pipe"), httpx.RemoteProtocolError("closed")],
    )
    async def test_never_retries_once_the_request_may_have_been_sent(
        self, http: httpx.AsyncClient, mock: respx.MockRouter, error: Exception
    ) -> None:
        route = mock.get(host="bidpaw.test").mock(side_effect=error)
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert raised.value.outcome is Outcome.CONNECTION_LOST
        assert route.call_count == 1

    @pytest.mark.parametrize("status", [400, 500, 502, 503])
    async def test_never_retries_an_answer(
        self, http: httpx.AsyncClient, mock: respx.MockRouter, status: int
    ) -> None:
        route = mock.get(host="bidpaw.test").respond(status, json={"data": None, "status": status})
        with pytest.raises(BidPawBadGateway):
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert route.call_count == 1


class TestAnswers:
    async def test_does_not_follow_a_redirect(self, http: httpx.AsyncClient, mock: respx.MockRouter) -> None:
        route = mock.get(host="bidpaw.test").respond(302, headers={"Location": f"{API}/elsewhere"})
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert raised.value.detail == "BidPaw answered HTTP 302 instead of 200"
        assert route.call_count == 1

    async def test_another_2xx_is_not_success(self, http: httpx.AsyncClient, mock: respx.MockRouter) -> None:
        mock.get(host="bidpaw.test").respond(201, json=OK)
        with pytest.raises(BidPawBadGateway):
            await bidpaw(http).open_session(user_id="42", nick=None)

    async def test_an_http_iframe_url_is_accepted_only_from_an_http_api(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        mock.get(host="127.0.0.1").respond(200, json={"iframeURL": "http://127.0.0.1:9/lobby?token=t"})
        local = bidpaw(http, bidpaw_api_url="http://127.0.0.1:9")
        assert await local.open_session(user_id="42", nick=None) == "http://127.0.0.1:9/lobby?token=t"
        mock.get(host="bidpaw.test").respond(200, json={"iframeURL": "http://127.0.0.1:9/lobby?token=t"})
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert raised.value.detail == "BidPaw's iframeURL is not an absolute https URL"

    @pytest.mark.parametrize(
        "url",
        [
            "https://",
            "https:lobby",
            "//lobby.bidpaw.test/x",
            "https://lobby.bidpaw.test/a b",
            "https://lobby.bidpaw.test/\nx",
            "https://lobby.bidpaw.test:99999/",
            "https://lobby.bidpaw.test/" + "x" * 9000,
            "ftp://lobby.bidpaw.test/",
            "data:text/html,<script>alert(1)</script>",
        ],
    )
    async def test_rejects_iframe_urls_a_browser_should_not_open(
        self, http: httpx.AsyncClient, mock: respx.MockRouter, url: str
    ) -> None:
        mock.get(host="bidpaw.test").respond(200, json={"iframeURL": url})
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert raised.value.outcome is Outcome.INVALID_RESPONSE

    async def test_stops_at_a_declared_oversize_body(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        body = b'{"iframeURL": "' + IFRAME.encode() + b'", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
        mock.get(host="bidpaw.test").respond(200, content=body, headers={"Content-Type": "application/json"})
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert raised.value.detail == f"BidPaw's answer is larger than {MAX_BODY_BYTES} bytes"

    async def test_an_error_status_is_reported_whatever_its_body(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        mock.get(host="bidpaw.test").respond(500, content=b"x" * (MAX_BODY_BYTES * 2))
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert (raised.value.outcome, raised.value.detail) == (
            Outcome.SERVER_ERROR,
            "BidPaw failed (HTTP 500)",
        )

    async def test_accepts_a_body_of_exactly_the_cap(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        head = b'{"iframeURL": "' + IFRAME.encode() + b'", "pad": "'
        body = head + b"x" * (MAX_BODY_BYTES - len(head) - 2) + b'"}'
        assert len(body) == MAX_BODY_BYTES
        mock.get(host="bidpaw.test").respond(200, content=body)
        assert await bidpaw(http).open_session(user_id="42", nick=None) == IFRAME

    async def test_a_deeply_nested_body_is_not_json_to_us(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        mock.get(host="bidpaw.test").respond(200, content=b"[" * 60000)
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert raised.value.detail == "BidPaw's answer is not JSON"


class TestMetrics:
    async def test_counts_calls_and_latency_by_outcome(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        def sample(name: str, outcome: str) -> float:
            return REGISTRY.get_sample_value(name, {"outcome": outcome}) or 0.0

        before = (
            sample("partner_gateway_bidpaw_calls_total", "ok"),
            sample("partner_gateway_bidpaw_calls_total", "rejected"),
        )
        seconds = sample("partner_gateway_bidpaw_call_seconds_count", "ok")
        mock.get(host="bidpaw.test").mock(side_effect=[httpx.Response(200, json=OK), httpx.Response(400)])
        await bidpaw(http).open_session(user_id="42", nick=None)
        with pytest.raises(BidPawBadGateway):
            await bidpaw(http).open_session(user_id="42", nick=None)
        after = (
            sample("partner_gateway_bidpaw_calls_total", "ok"),
            sample("partner_gateway_bidpaw_calls_total", "rejected"),
        )
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
        assert sample("partner_gateway_bidpaw_call_seconds_count", "ok") == seconds + 1


class TestConstruction:
    def test_refuses_incomplete_settings(self, http: httpx.AsyncClient) -> None:
        with pytest.raises(ValueError, match="BIDPAW_SECRET_KEY"):
            bidpaw(http, bidpaw_secret_key=None)

    def test_refuses_settings_without_a_game_id(self, http: httpx.AsyncClient) -> None:
        for game_id in (None, ""):
            with pytest.raises(ValueError, match="BIDPAW_GAME_ID"):
                bidpaw(http, bidpaw_game_id=game_id)


SIGN_SENT = "0f" * 32


class TestBidPawsMessage:
    """What reaches the log line of BidPaw's error `message` (the caller's detail never has it)."""

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (
                b'{"data": null, "status": 400, "message": "Request signature invalid"}',
                "Request signature invalid",
            ),
            (rb'{"message": "a\nb\r\u0000c\u001b[31md\u2028e\u202ef\ud800g\tz"}', "abc[31mdefgz"),
            (b'{"message": "' + b"x" * 300 + b'"}', "x" * 200),
            (b'{"message": "' + rb"\n" * 300 + b'ok"}', "ok"),
            (
                b'{"message": "key ' + SECRET.encode() + b" sign " + SIGN_SENT.encode() + b'"}',
                "key [redacted] sign [redacted]",
            ),
            (b'{"message": "' + b"y" * 195 + SECRET.encode() + b'"}', "y" * 195 + "[reda"),
            (b'{"message": 42}', None),
            (b'{"error": "x"}', None),
            (b'["message"]', None),
            (b"<html>Bad Request</html>", None),
            (b"\xff\xfe", None),
            (b"", None),
        ],
    )
    def test_is_sanitised_capped_and_never_carries_a_secret(self, body: bytes, expected: str | None) -> None:
        assert bidpaw_message(body, secrets=[SECRET, SIGN_SENT]) == expected

    async def test_rides_on_the_error_and_not_in_its_detail(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        body = {"data": None, "status": 400, "message": "Required parameters missing: gameId"}
        mock.get(host="bidpaw.test").respond(400, json=body)
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert raised.value.detail == "BidPaw rejected the request (HTTP 400)"
        assert raised.value.bidpaw_message == "Required parameters missing: gameId"

    async def test_the_sign_sent_is_cut_out(self, http: httpx.AsyncClient, mock: respx.MockRouter) -> None:
        def echo_sign(request: httpx.Request) -> httpx.Response:
            return httpx.Response(400, json={"message": f"bad sign {request.headers['sign']}"})

        mock.get(host="bidpaw.test").mock(side_effect=echo_sign)
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert raised.value.bidpaw_message == "bad sign [redacted]"

    async def test_an_oversized_error_body_is_not_read_for_one(
        self, http: httpx.AsyncClient, mock: respx.MockRouter
    ) -> None:
        body = b'{"message": "m", "pad": "' + b"x" * MAX_ERROR_BODY_BYTES + b'"}'
        mock.get(host="bidpaw.test").respond(500, content=body)
        with pytest.raises(BidPawBadGateway) as raised:
            await bidpaw(http).open_session(user_id="42", nick=None)
        assert (raised.value.outcome, raised.value.bidpaw_message) == (Outcome.SERVER_ERROR, None)


async def _answer_200s(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive HTTP/1.1 server's loop: 200 with no body to every request head."""
    while (await reader.readuntil(b"\r\n\r\n")).startswith(b"GET"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()


class TestCost:
    async def test_httpcore_finds_sniffio_once_instead_of_searching_for_it_on_every_request(self) -> None:
        """httpcore runs `import sniffio` for each request it sends. Without the package that
        import fails after a search of sys.path, every time: a quarter of open-session's CPU."""
        calls = 0
        original = importlib._bootstrap._find_and_load  # type: ignore[attr-defined]

        def counting(name: str, import_: Any) -> Any:
            nonlocal calls
            calls += 1
            return original(name, import_)

        server = await asyncio.start_server(_answer_200s, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with server, httpx.AsyncClient() as client:
            await client.get(url)  # whatever loads once loads here
            importlib._bootstrap._find_and_load = counting  # type: ignore[attr-defined]
            try:
                for _ in range(5):
                    assert (await client.get(url)).status_code == 200
            finally:
                importlib._bootstrap._find_and_load = original  # type: ignore[attr-defined]
        assert calls == 0

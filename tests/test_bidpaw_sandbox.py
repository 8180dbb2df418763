"""The BidPaw sandbox verifies `sign` as BidPaw does, and our client always passes that check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from partner_gateway.bidpaw.client import BidPawClient, encode_query, open_session_params
from partner_gateway.bidpaw.sandbox import NOT_VALID, create_sandbox_app, is_valid, query_params
from partner_gateway.bidpaw.signing import sign
from tests.conftest import make_settings

CLIENT_ID = "casino-7"
SECRET = "sandbox-secret-ü"
PATH = "/api/casino/open-session/"


@pytest.fixture
def sandbox() -> Starlette:
    return create_sandbox_app(client_id=CLIENT_ID, secret_key=SECRET)


@pytest.fixture
async def http(sandbox: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox), base_url="http://sandbox"
    ) as client:
        yield client


def signed(params: list[tuple[str, str]], secret: str = SECRET) -> tuple[str, dict[str, str]]:
    return f"{PATH}?{encode_query(params)}", {"sign": sign(params=params, secret=secret)}


class TestAcceptsCorrectlySignedRequests:
    async def test_answers_a_fake_iframe_url_with_fresh_tokens(self, http: httpx.AsyncClient) -> None:
        url, headers = signed([("clientId", CLIENT_ID), ("nick", 'Jöhn "🎰" \\/'), ("userId", "42")])
        first, second = (
            (await http.get(url, headers=headers)).json(),
            (await http.get(url, headers=headers)).json(),
        )
        assert set(first) == {"iframeURL"}
        parts = urlsplit(first["iframeURL"])
        assert (parts.scheme, parts.netloc, parts.path) == ("https", "sandbox.bidpaw.invalid", "/auctions")
        query = parse_qs(parts.query)
        assert set(query) == {"token", "session", "casinoId"}
        assert query["casinoId"] == [CLIENT_ID]
        assert first["iframeURL"] != second["iframeURL"]

    async def test_records_the_request_as_it_arrived(
        self, http: httpx.AsyncClient, sandbox: Starlette
    ) -> None:
        url, headers = signed([("clientId", CLIENT_ID), ("userId", "a b")])
        await http.get(url, headers=headers)
        received = sandbox.state.received[-1]
        assert (received.method, received.path, received.query) == (
            "GET",
            PATH,
            b"clientId=casino-7&userId=a%20b",
        )
        assert ("sign", headers["sign"]) in received.headers


class TestAnswersNotValidRequest:
    @pytest.mark.parametrize(
        ("params", "secret"),
        [
            pytest.param([("clientId", CLIENT_ID), ("userId", "42")], "wrong-secret", id="wrong secret"),
            pytest.param([("clientId", "someone-else"), ("userId", "42")], SECRET, id="another client id"),
            pytest.param([("userId", "42")], SECRET, id="no client id"),
            pytest.param([("clientId", CLIENT_ID)], SECRET, id="no user id"),
        ],
    )
    async def test_for_a_bad_signature_or_client_id(
        self, http: httpx.AsyncClient, params: list[tuple[str, str]], secret: str
    ) -> None:
        url, headers = signed(params, secret)
        response = await http.get(url, headers=headers)
        assert response.status_code == 400
        assert response.json() == NOT_VALID == {"data": None, "status": 400, "message": "Not valid request"}

    async def test_without_a_sign_header(self, http: httpx.AsyncClient) -> None:
        url, _ = signed([("clientId", CLIENT_ID), ("userId", "42")])
        assert (await http.get(url)).status_code == 400

    async def test_when_the_query_order_differs_from_the_signed_order(self, http: httpx.AsyncClient) -> None:
        _, headers = signed([("clientId", CLIENT_ID), ("nick", "n"), ("userId", "42")])
        reordered = encode_query([("clientId", CLIENT_ID), ("userId", "42"), ("nick", "n")])
        assert (await http.get(f"{PATH}?{reordered}", headers=headers)).status_code == 400

    async def test_when_a_signed_parameter_was_dropped(self, http: httpx.AsyncClient) -> None:
        _, headers = signed([("clientId", CLIENT_ID), ("nick", ""), ("userId", "42")])
        url, _ = signed([("clientId", CLIENT_ID), ("userId", "42")])
        assert (await http.get(url, headers=headers)).status_code == 400

    async def test_when_the_query_is_not_utf8(self, http: httpx.AsyncClient) -> None:
        assert query_params(b"clientId=%FF") is None
        url, headers = signed([("clientId", CLIENT_ID), ("userId", "42")])
        assert (await http.get(url + "&x=%FF", headers=headers)).status_code == 400


class TestVerifier:
    def test_keeps_blank_values_and_arrival_order(self) -> None:
        assert query_params(b"b=&a=%C3%BC+x") == [("b", ""), ("a", "ü x")]

    def test_checks_the_signature_over_the_rebuilt_object(self) -> None:
        params = [("clientId", CLIENT_ID), ("nick", ""), ("userId", "42")]
        good = sign(params=params, secret=SECRET)
        assert is_valid(params, good, client_id=CLIENT_ID, secret_key=SECRET)
        assert not is_valid(params, good, client_id="other", secret_key=SECRET)
        assert not is_valid(params, None, client_id=CLIENT_ID, secret_key=SECRET)


def bidpaw_client(http: httpx.AsyncClient, *, client_id: str, secret: str) -> BidPawClient:
    settings = make_settings(
        "postgresql+asyncpg://unused/unused",
        bidpaw_api_url="http://sandbox.test",
        bidpaw_client_id=client_id,
        bidpaw_secret_key=secret,
    )
    return BidPawClient(http, settings=settings)


class TestSignatureAlwaysVerifiesOverTheQuerySent:
    # Hypothesis' text() covers every code point but surrogates (HTTP input cannot carry them):
    # quotes, backslashes, control characters, U+2028, emoji, combining marks, digits.
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        client_id=st.text(min_size=1, max_size=20),
        secret=st.text(min_size=1, max_size=40),
        user_id=st.text(min_size=1, max_size=40),
        nick=st.none() | st.text(max_size=40),
    )
    async def test_for_any_ids_nick_and_secret(
        self, client_id: str, secret: str, user_id: str, nick: str | None
    ) -> None:
        sandbox = create_sandbox_app(client_id=client_id, secret_key=secret)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
            client = bidpaw_client(http, client_id=client_id, secret=secret)
            iframe_url = await client.open_session(user_id=user_id, nick=nick)
        assert iframe_url.startswith("https://sandbox.bidpaw.invalid/auctions?")
        received = sandbox.state.received[-1]
        expected = open_session_params(client_id=client_id, user_id=user_id, nick=nick)
        assert query_params(received.query) == expected
        assert dict(received.headers)["sign"] == sign(params=expected, secret=secret)

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
from partner_gateway.bidpaw.endpoints import CURRENCIES
from partner_gateway.bidpaw.sandbox import (
    MISSING_SIGN,
    SIGNATURE_INVALID,
    bidpaw_error,
    create_sandbox_app,
    is_valid,
    query_params,
)
from partner_gateway.bidpaw.signing import sign
from tests.conftest import make_settings

CLIENT_ID = "casino-7"
SECRET = "sandbox-secret-ü"
PATH = "/api/casino/open-session/"
GAME = ("gameId", "game-1")


@pytest.fixture
def sandbox() -> Starlette:
    return create_sandbox_app(client_id=CLIENT_ID, secret_key=SECRET, restricted_countries=["us", "GB"])


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
        url, headers = signed([("clientId", CLIENT_ID), ("nick", 'Jöhn "🎰" \\/'), ("userId", "42"), GAME])
        first, second = (
            (await http.get(url, headers=headers)).json(),
            (await http.get(url, headers=headers)).json(),
        )
        assert set(first) == {"iframeURL"}
        parts = urlsplit(first["iframeURL"])
        assert (parts.scheme, parts.netloc, parts.path) == ("https", "sandbox.bidpaw.invalid", "/en/auctions")
        query = parse_qs(parts.query)
        assert list(query) == ["token", "session", "casinoId"]
        assert query["casinoId"] == [CLIENT_ID]
        second_query = parse_qs(urlsplit(second["iframeURL"]).query)
        assert query["token"] != second_query["token"]
        assert query["session"] != second_query["session"]

    @pytest.mark.parametrize(
        ("lang", "path"),
        [("de", "/de/"), ("FR", "/fr/"), ("pt-BR", "/en/"), ("xx", "/en/"), (None, "/en/")],
    )
    async def test_lang_picks_the_locale_of_the_path_else_en(
        self, http: httpx.AsyncClient, lang: str | None, path: str
    ) -> None:
        params = [("clientId", CLIENT_ID), ("userId", "42"), *([("lang", lang)] if lang else []), GAME]
        url, headers = signed(params)
        iframe = (await http.get(url, headers=headers)).json()["iframeURL"]
        assert urlsplit(iframe).path == f"{path}auctions"

    @pytest.mark.parametrize(
        ("country", "page"), [("US", "region-restriction"), ("gb", "region-restriction"), ("DE", "auctions")]
    )
    async def test_a_restricted_country_gets_the_region_restriction_page_with_a_200(
        self, http: httpx.AsyncClient, country: str, page: str
    ) -> None:
        url, headers = signed(
            [("clientId", CLIENT_ID), ("userId", "42"), ("lang", "es"), ("country", country), GAME]
        )
        response = await http.get(url, headers=headers)
        assert response.status_code == 200
        parts = urlsplit(response.json()["iframeURL"])
        assert parts.path == f"/es/{page}"
        assert list(parse_qs(parts.query)) == ["token", "session", "casinoId"]

    async def test_remembers_each_session_it_opened(
        self, http: httpx.AsyncClient, sandbox: Starlette
    ) -> None:
        url, headers = signed([("clientId", CLIENT_ID), ("userId", "p-1"), ("currency", "EUR"), GAME])
        iframe = (await http.get(url, headers=headers)).json()["iframeURL"]
        opened = sandbox.state.opened[-1]
        assert (opened.user_id, opened.game_id, opened.currency, opened.iframe_url) == (
            "p-1",
            "game-1",
            "EUR",
            iframe,
        )
        assert parse_qs(urlsplit(iframe).query)["session"] == [opened.session]

    async def test_records_the_request_as_it_arrived(
        self, http: httpx.AsyncClient, sandbox: Starlette
    ) -> None:
        url, headers = signed([("clientId", CLIENT_ID), ("userId", "a b"), GAME])
        await http.get(url, headers=headers)
        received = sandbox.state.received[-1]
        assert (received.method, received.path, received.query) == (
            "GET",
            PATH,
            b"clientId=casino-7&userId=a%20b&gameId=game-1",
        )
        assert ("sign", headers["sign"]) in received.headers


class TestAnswersBidPawsThree400s:
    @pytest.mark.parametrize(
        ("params", "missing"),
        [
            pytest.param([("clientId", CLIENT_ID), ("userId", "42")], "gameId", id="no game id"),
            pytest.param([("userId", "42"), GAME], "clientId", id="no client id"),
            pytest.param([("clientId", CLIENT_ID), GAME], "userId", id="no user id"),
            pytest.param(
                [("clientId", CLIENT_ID), ("userId", ""), ("gameId", "")], "userId, gameId", id="empty"
            ),
            pytest.param([("nick", "n")], "clientId, userId, gameId", id="none"),
        ],
    )
    async def test_required_parameters_missing_names_them(
        self, http: httpx.AsyncClient, params: list[tuple[str, str]], missing: str
    ) -> None:
        url, headers = signed(params)
        for sent in (headers, {}):  # checked before the sign header
            response = await http.get(url, headers=sent)
            assert response.status_code == 400
            assert response.json() == {
                "data": None,
                "status": 400,
                "message": f"Required parameters missing: {missing}",
            }

    async def test_without_a_sign_header(self, http: httpx.AsyncClient) -> None:
        url, _ = signed([("clientId", CLIENT_ID), ("userId", "42"), GAME])
        response = await http.get(url)
        assert response.status_code == 400
        assert (
            response.json()
            == bidpaw_error(MISSING_SIGN)
            == {
                "data": None,
                "status": 400,
                "message": "Not valid request. Missing required sign header.",
            }
        )

    @pytest.mark.parametrize(
        ("params", "secret"),
        [
            pytest.param(
                [("clientId", CLIENT_ID), ("userId", "42"), GAME], "wrong-secret", id="wrong secret"
            ),
            pytest.param(
                [("clientId", "someone-else"), ("userId", "42"), GAME], SECRET, id="another client id"
            ),
        ],
    )
    async def test_request_signature_invalid(
        self, http: httpx.AsyncClient, params: list[tuple[str, str]], secret: str
    ) -> None:
        url, headers = signed(params, secret)
        response = await http.get(url, headers=headers)
        assert response.status_code == 400
        assert (
            response.json()
            == bidpaw_error(SIGNATURE_INVALID)
            == {
                "data": None,
                "status": 400,
                "message": "Request signature invalid",
            }
        )

    async def test_when_the_query_order_differs_from_the_signed_order(self, http: httpx.AsyncClient) -> None:
        _, headers = signed([("clientId", CLIENT_ID), ("nick", "n"), ("userId", "42"), GAME])
        reordered = encode_query([("clientId", CLIENT_ID), ("userId", "42"), ("nick", "n"), GAME])
        response = await http.get(f"{PATH}?{reordered}", headers=headers)
        assert response.json() == bidpaw_error(SIGNATURE_INVALID)

    async def test_when_a_signed_parameter_was_dropped(self, http: httpx.AsyncClient) -> None:
        _, headers = signed([("clientId", CLIENT_ID), ("nick", ""), ("userId", "42"), GAME])
        url, _ = signed([("clientId", CLIENT_ID), ("userId", "42"), GAME])
        assert (await http.get(url, headers=headers)).json() == bidpaw_error(SIGNATURE_INVALID)

    async def test_when_the_query_is_not_utf8(self, http: httpx.AsyncClient) -> None:
        assert query_params(b"clientId=%FF") is None
        url, headers = signed([("clientId", CLIENT_ID), ("userId", "42"), GAME])
        response = await http.get(url + "&x=%FF", headers=headers)
        assert response.json() == bidpaw_error(SIGNATURE_INVALID)


class TestVerifier:
    def test_keeps_blank_values_and_arrival_order(self) -> None:
        assert query_params(b"b=&a=%C3%BC+x") == [("b", ""), ("a", "ü x")]

    def test_checks_the_signature_over_the_rebuilt_object(self) -> None:
        params = [("clientId", CLIENT_ID), ("nick", ""), ("userId", "42"), GAME]
        good = sign(params=params, secret=SECRET)
        assert is_valid(params, good, client_id=CLIENT_ID, secret_key=SECRET)
        assert not is_valid(params, good, client_id="other", secret_key=SECRET)
        assert not is_valid(params, None, client_id=CLIENT_ID, secret_key=SECRET)


def bidpaw_client(
    http: httpx.AsyncClient, *, client_id: str, secret: str, game_id: str, allowed_countries: str
) -> BidPawClient:
    settings = make_settings(
        "postgresql+asyncpg://unused/unused",
        bidpaw_api_url="http://sandbox.test",
        bidpaw_client_id=client_id,
        bidpaw_secret_key=secret,
        bidpaw_game_id=game_id,
        bidpaw_allowed_countries=allowed_countries,
    )
    return BidPawClient(http, settings=settings)


class TestSignatureAlwaysVerifiesOverTheQuerySent:
    # Hypothesis' text() covers every code point but surrogates (HTTP input cannot carry them):
    # quotes, backslashes, control characters, U+2028, emoji, combining marks, digits.
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    # lang, currency and country arrive checked (ASCII letters, hyphens); gameId is any text.
    @given(
        client_id=st.text(min_size=1, max_size=20),
        secret=st.text(min_size=1, max_size=40),
        user_id=st.text(min_size=1, max_size=40),
        nick=st.none() | st.text(max_size=40),
        game_id=st.text(min_size=1, max_size=40),
        lang=st.none() | st.from_regex(r"[A-Za-z-]{2,8}", fullmatch=True),
        currency=st.none() | st.sampled_from(sorted(CURRENCIES)).map(str.lower),
        country=st.none() | st.from_regex(r"[A-Za-z]{2}", fullmatch=True),
        allowed=st.lists(st.from_regex(r"[A-Za-z]{2}", fullmatch=True), max_size=4),
    )
    async def test_for_any_ids_nick_secret_and_todays_parameters(
        self,
        client_id: str,
        secret: str,
        user_id: str,
        nick: str | None,
        game_id: str,
        lang: str | None,
        currency: str | None,
        country: str | None,
        allowed: list[str],
    ) -> None:
        sandbox = create_sandbox_app(client_id=client_id, secret_key=secret)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
            client = bidpaw_client(
                http, client_id=client_id, secret=secret, game_id=game_id, allowed_countries=",".join(allowed)
            )
            iframe_url = await client.open_session(
                user_id=user_id, nick=nick, lang=lang, currency=currency, country=country
            )
        assert iframe_url.startswith("https://sandbox.bidpaw.invalid/")
        received = sandbox.state.received[-1]
        expected = open_session_params(
            client_id=client_id,
            user_id=user_id,
            nick=nick,
            game_id=game_id,
            lang=lang,
            currency=currency,
            country=country,
            allowed_countries=allowed,
        )
        names = [name for name, _ in expected]
        order = ["clientId", "nick", "userId", "lang", "currency", "country", "gameId", "allowedCountries"]
        assert names == [name for name in order if name in names]
        assert {"clientId", "userId", "gameId"} <= set(names)
        assert query_params(received.query) == expected
        assert dict(received.headers)["sign"] == sign(params=expected, secret=secret)

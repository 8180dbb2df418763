"""POST /betlink/sessions/introspect: the wallet's check of a BetLink sessionToken."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.betlink import service
from partner_gateway.db import Database
from tests.conftest import GATEWAY_HEADERS
from tests.helpers import authenticate, launch

URL = "/betlink/sessions/introspect"


async def live_token(client: httpx.AsyncClient, user_id: str = "player-1") -> dict[str, str]:
    answer: dict[str, str] = (await authenticate(client, await launch(client, user_id))).json()
    return answer


class TestIntrospect:
    async def test_live_token_answers_the_real_user_and_expiry(self, client: httpx.AsyncClient) -> None:
        answer = await live_token(client)
        response = await client.post(
            URL, headers=GATEWAY_HEADERS, json={"operatorSessionToken": answer["operatorSessionToken"]}
        )
        assert response.status_code == 200
        assert response.json() == {
            "active": True,
            "userId": "player-1",
            "sessionExpiry": answer["sessionExpiry"],
        }

    @pytest.mark.parametrize("token", ["", "unknown-token", "x" * 5000, "a\x00b", "🎰"])
    async def test_unknown_or_malformed_token_is_exactly_inactive(
        self, client: httpx.AsyncClient, token: str
    ) -> None:
        response = await client.post(URL, headers=GATEWAY_HEADERS, json={"operatorSessionToken": token})
        assert response.status_code == 200
        assert response.text == '{"active":false}'

    async def test_a_launch_token_is_not_a_session_token(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        response = await client.post(
            URL, headers=GATEWAY_HEADERS, json={"operatorSessionToken": session["launchToken"]}
        )
        assert response.json() == {"active": False}

    async def test_revoked_token_is_inactive(self, client: httpx.AsyncClient, engine: AsyncEngine) -> None:
        answer = await live_token(client)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE user_sessions SET revoked_at = now()"))
        response = await client.post(
            URL, headers=GATEWAY_HEADERS, json={"operatorSessionToken": answer["operatorSessionToken"]}
        )
        assert response.json() == {"active": False}

    async def test_expiry_is_decided_by_the_time_given(
        self, client: httpx.AsyncClient, engine: AsyncEngine, database: Database
    ) -> None:
        answer = await live_token(client)
        async with engine.connect() as conn:
            expires = (await conn.execute(text("SELECT session_expires_at FROM user_sessions"))).scalar_one()
        async with database.statement() as conn:
            token = answer["operatorSessionToken"]
            assert await service.introspect(conn, token=token, now=expires - timedelta(seconds=1)) is not None
            assert await service.introspect(conn, token=token, now=expires) is None

    @pytest.mark.parametrize(
        "body",
        [b"", b"{}", b"[]", b'{"operatorSessionToken": 5}', b"{nope", b'{"operatorSessionToken": null}'],
    )
    async def test_malformed_body_is_400_problem(self, client: httpx.AsyncClient, body: bytes) -> None:
        response = await client.post(
            URL, headers={**GATEWAY_HEADERS, "Content-Type": "application/json"}, content=body
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert set(response.json()) == {"type", "title", "status", "detail"}

    async def test_without_a_gateway_key_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post(URL, json={"operatorSessionToken": "x"})
        assert response.status_code == 401

    async def test_the_key_is_checked_before_the_body(self, client: httpx.AsyncClient) -> None:
        response = await client.post(URL, content=b"{nope")
        assert response.status_code == 401

    async def test_a_lone_surrogate_is_400_not_500(self, client: httpx.AsyncClient) -> None:
        body = b'{"operatorSessionToken": "ab\\ud800cd"}'
        response = await client.post(URL, headers=GATEWAY_HEADERS, content=body)
        assert response.status_code == 400

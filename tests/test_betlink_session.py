"""POST /betlink/session: BetLink's Session endpoint."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import GATEWAY_HEADERS, GATEWAY_KEY_ROTATED, OPERATOR_ID

URL_SAFE = re.compile(r"^[A-Za-z0-9_-]{22,}$")
PROBLEM = "application/problem+json"


async def issue(client: httpx.AsyncClient, user_id: str = "player-1") -> httpx.Response:
    return await client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": user_id})


class TestIssuesLaunchToken:
    async def test_answers_exactly_the_three_values_the_iframe_needs(self, client: httpx.AsyncClient) -> None:
        response = await issue(client)
        assert response.status_code == 201
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"launchToken", "userId", "operatorId"}
        assert body["userId"] == "player-1"
        assert body["operatorId"] == OPERATOR_ID
        assert URL_SAFE.match(body["launchToken"])

    async def test_every_call_creates_a_new_session_with_a_new_token(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        tokens = {(await issue(client)).json()["launchToken"] for _ in range(5)}
        assert len(tokens) == 5
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM user_sessions"))).scalar()
        assert count == 5

    async def test_stores_only_the_digest_and_an_expiry_of_now_plus_ttl(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        before = datetime.now(UTC)
        token = (await issue(client)).json()["launchToken"]
        after = datetime.now(UTC)
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT * FROM user_sessions"))).one()
            dump = str((await conn.execute(text("SELECT u::text FROM user_sessions u"))).scalar())
        assert row.launch_token_hash == hashlib.sha256(token.encode()).digest()
        assert token not in dump
        assert before + timedelta(seconds=10) <= row.launch_expires_at <= after + timedelta(seconds=10)
        assert row.session_token_hash is None
        assert row.session_expires_at is None
        assert row.revoked_at is None
        assert row.user_id == "player-1"

    async def test_accepts_the_second_rotated_gateway_key(self, client: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {GATEWAY_KEY_ROTATED}", "X-User-Id": "p"}
        assert (await client.post("/betlink/session", headers=headers)).status_code == 201

    async def test_accepts_a_utf8_user_id(self, client: httpx.AsyncClient) -> None:
        headers = [
            (b"authorization", GATEWAY_HEADERS["Authorization"].encode()),
            (b"x-user-id", "Jöhn-🎰".encode()),
        ]
        response = await client.post("/betlink/session", headers=headers)
        assert response.status_code == 201
        assert response.json()["userId"] == "Jöhn-🎰"


class TestRejectsCallers:
    async def test_without_a_key_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/betlink/session", headers={"X-User-Id": "p"})
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
        assert response.json() == {
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": "missing or invalid gateway API key: send Authorization: Bearer <key>",
        }

    async def test_with_a_wrong_key_is_401(self, client: httpx.AsyncClient) -> None:
        for value in ("Bearer nope", "Basic gw-test-key-0001", "gw-test-key-0001", "Bearer "):
            response = await client.post(
                "/betlink/session", headers={"Authorization": value, "X-User-Id": "p"}
            )
            assert response.status_code == 401, value

    async def test_key_check_comes_before_the_user_id_check(self, client: httpx.AsyncClient) -> None:
        assert (await client.post("/betlink/session")).status_code == 401

    async def test_without_user_id_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/betlink/session", headers=GATEWAY_HEADERS)
        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["detail"] == "missing X-User-Id header"

    async def test_with_a_malformed_user_id_is_400(self, client: httpx.AsyncClient) -> None:
        for raw in (b"", b"x" * 129, b"a\x01b", b"\xff\xfe", b"tab\there"):
            headers = [(b"authorization", GATEWAY_HEADERS["Authorization"].encode()), (b"x-user-id", raw)]
            response = await client.post("/betlink/session", headers=headers)
            assert response.status_code == 400, raw
            assert response.headers["content-type"] == PROBLEM

    async def test_a_128_character_user_id_is_accepted(self, client: httpx.AsyncClient) -> None:
        assert (await issue(client, "x" * 128)).status_code == 201

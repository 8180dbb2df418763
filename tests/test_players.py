"""Blocking: takes effect at once on every endpoint; unblocking allows new sessions only."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.db import Database
from partner_gateway.security import key_label
from tests.conftest import GATEWAY_HEADERS, GATEWAY_KEY
from tests.helpers import authenticate, failure, launch
from tests.processes import served

PROBLEM = "application/problem+json"


async def block(client: httpx.AsyncClient, user_id: str = "player-1") -> httpx.Response:
    return await client.put(f"/players/{user_id}/block", headers=GATEWAY_HEADERS)


async def unblock(client: httpx.AsyncClient, user_id: str = "player-1") -> httpx.Response:
    return await client.delete(f"/players/{user_id}/block", headers=GATEWAY_HEADERS)


async def introspect(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await client.post(
        "/betlink/sessions/introspect", headers=GATEWAY_HEADERS, json={"operatorSessionToken": token}
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


class TestBlockMatrix:
    async def test_block_revokes_and_refuses_everywhere(self, client: httpx.AsyncClient) -> None:
        pending = await launch(client)  # a launch token issued before the block
        exchanged = await launch(client)
        token = (await authenticate(client, exchanged)).json()["operatorSessionToken"]
        assert (await introspect(client, token))["active"] is True

        assert (await block(client)).status_code == 204

        assert await introspect(client, token) == {"active": False}
        refused = await client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "player-1"})
        assert refused.status_code == 403
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["detail"] == "the player is blocked"
        response = await authenticate(client, pending)
        assert response.status_code == 400
        assert response.json() == failure("USER_BLOCKED", "the player is blocked")

    async def test_other_players_are_untouched(self, client: httpx.AsyncClient) -> None:
        other = await launch(client, "player-2")
        await block(client, "player-1")
        assert (await authenticate(client, other)).status_code == 200

    async def test_a_replay_of_an_earlier_success_still_returns_its_body(
        self, client: httpx.AsyncClient
    ) -> None:
        session = await launch(client)
        key = "5b0f8c7e-6a43-4c2e-9a57-1f0d3c8b2e11"
        first = await authenticate(client, session, key=key)
        await block(client)
        again = await authenticate(client, session, key=key)
        assert again.status_code == 200
        assert again.content == first.content
        assert await introspect(client, first.json()["operatorSessionToken"]) == {"active": False}

    async def test_unblock_allows_new_sessions_but_revoked_tokens_stay_dead(
        self, client: httpx.AsyncClient
    ) -> None:
        before = await launch(client)
        token = (await authenticate(client, await launch(client))).json()["operatorSessionToken"]
        await block(client)
        assert (await unblock(client)).status_code == 204
        assert await introspect(client, token) == {"active": False}
        assert (await authenticate(client, before)).json()["errorCode"] == "INVALID_SESSION"
        fresh = await launch(client)
        assert (await authenticate(client, fresh)).status_code == 200

    async def test_blocking_a_player_never_seen_takes_effect_before_their_first_session(
        self, client: httpx.AsyncClient
    ) -> None:
        assert (await block(client, "newcomer")).status_code == 204
        refused = await client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "newcomer"})
        assert refused.status_code == 403

    async def test_block_and_unblock_are_idempotent(self, client: httpx.AsyncClient) -> None:
        assert [(await block(client)).status_code for _ in range(2)] == [204, 204]
        assert [(await unblock(client)).status_code for _ in range(2)] == [204, 204]
        assert (await unblock(client, "never-blocked")).status_code == 204

    async def test_every_call_is_audited_with_the_key_label(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        await block(client)
        await unblock(client)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT user_id, blocked, actor FROM player_block_events ORDER BY id")
                )
            ).all()
        label = key_label(GATEWAY_KEY)
        assert [tuple(row) for row in rows] == [("player-1", True, label), ("player-1", False, label)]
        assert GATEWAY_KEY not in label

    async def test_utf8_and_percent_encoded_user_ids(self, client: httpx.AsyncClient) -> None:
        headers = [
            (b"authorization", GATEWAY_HEADERS["Authorization"].encode()),
            (b"x-user-id", "Jö 🎰".encode()),
        ]
        assert (await client.post("/betlink/session", headers=headers)).status_code == 201
        assert (
            await client.put("/players/J%C3%B6%20%F0%9F%8E%B0/block", headers=GATEWAY_HEADERS)
        ).status_code == 204
        assert (await client.post("/betlink/session", headers=headers)).status_code == 403


class TestBlockPathIds:
    async def test_a_slash_in_a_user_id_is_blocked_like_any_other(self, client: httpx.AsyncClient) -> None:
        headers = {**GATEWAY_HEADERS, "X-User-Id": "a/b"}
        assert (await client.post("/betlink/session", headers=headers)).status_code == 201
        assert (await client.put("/players/a%2Fb/block", headers=GATEWAY_HEADERS)).status_code == 204
        assert (await client.post("/betlink/session", headers=headers)).status_code == 403
        assert (await client.delete("/players/a%2Fb/block", headers=GATEWAY_HEADERS)).status_code == 204
        assert (await client.post("/betlink/session", headers=headers)).status_code == 201


async def _blocked_players(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT user_id FROM players WHERE blocked ORDER BY user_id"))
        return list(rows.scalars())


# Paths the router matches once percent-decoded, but that are not spelled /players/{userId}/block.
DISGUISED_PATHS = ["/%70layers/victim/block", "/players/victim/bloc%6B", "/pl%61yers/victim/%62lock"]


class TestBlockPathsAreStrict:
    """A compliance control fails closed: a disguised path blocks nobody, not even someone else."""

    @pytest.mark.parametrize("path", DISGUISED_PATHS)
    @pytest.mark.parametrize("method", ["PUT", "DELETE"])
    async def test_a_disguised_path_is_404_and_blocks_nobody(
        self, client: httpx.AsyncClient, engine: AsyncEngine, path: str, method: str
    ) -> None:
        response = await client.request(method, path, headers=GATEWAY_HEADERS)
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert await _blocked_players(engine) == []

    @pytest.mark.slow
    def test_through_a_real_server_too(self, database_url: str) -> None:
        with served(database_url) as url:
            port = int(url.rsplit(":", 1)[1])
            for path in DISGUISED_PATHS:
                request = f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\n"
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(request.encode() + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    status_line = sock.makefile("rb").readline()
                assert status_line.startswith(b"HTTP/1.1 404 "), (path, status_line)
            headers = {**GATEWAY_HEADERS, "X-User-Id": "victim"}
            assert httpx.post(f"{url}/betlink/session", headers=headers).status_code == 201


class TestBlockRejects:
    async def test_without_a_gateway_key_is_401(self, client: httpx.AsyncClient) -> None:
        for method in ("PUT", "DELETE"):
            response = await client.request(method, "/players/p/block")
            assert response.status_code == 401
            assert response.headers["content-type"] == PROBLEM

    @pytest.mark.parametrize("user_id", ["a%00b", "x" * 129, "tab%09", "%FF", "ok%C3", "a%ZZ%FF"])
    async def test_malformed_user_id_is_400(self, client: httpx.AsyncClient, user_id: str) -> None:
        response = await client.put(f"/players/{user_id}/block", headers=GATEWAY_HEADERS)
        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM


class TestBlockRaces:
    async def test_block_racing_in_flight_authenticates_never_leaves_a_live_token(
        self, make_client: Callable[..., Any]
    ) -> None:
        client = await make_client(db_pool_size=20, db_max_overflow=20, db_timeout_seconds=10)
        for _round in range(5):
            await unblock(client)
            sessions = [await launch(client) for _ in range(8)]
            results = await asyncio.gather(
                *(authenticate(client, s) for s in sessions[:4]),
                block(client),
                *(authenticate(client, s) for s in sessions[4:]),
            )
            tokens = [
                r.json()["operatorSessionToken"]
                for r in results
                if r.status_code == 200 and r.json().get("operatorSessionToken")
            ]
            for token in tokens:
                assert await introspect(client, token) == {"active": False}
            for response in results:
                assert response.status_code in (200, 204, 400, 401), response.text

    async def test_block_racing_session_creation_leaves_no_usable_launch_token(
        self, make_client: Callable[..., Any]
    ) -> None:
        client = await make_client(db_pool_size=20, db_max_overflow=20, db_timeout_seconds=10)
        for _round in range(5):
            await unblock(client)
            issued = [
                client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "player-1"})
                for _ in range(6)
            ]
            results = await asyncio.gather(*issued[:3], block(client), *issued[3:])
            for response in results:
                if response.status_code == 201:
                    answer = await authenticate(client, response.json())
                    assert answer.json()["errorCode"] == "USER_BLOCKED"


class TestPseudonymsWithBlocking:
    async def test_blocking_uses_the_real_id_when_betlink_sees_pseudonyms(
        self, make_client: Callable[..., Any]
    ) -> None:
        client = await make_client(betlink_user_id_key=base64.b64encode(bytes(64)).decode())
        session = await launch(client)
        assert session["userId"] != "player-1"
        await block(client, "player-1")
        assert (await authenticate(client, session)).json()["errorCode"] == "USER_BLOCKED"


class TestBlockLandingDuringAnExchange:
    async def test_an_exchange_queued_behind_a_block_answers_user_blocked(
        self, client: httpx.AsyncClient, database: Database
    ) -> None:
        from partner_gateway import store
        from partner_gateway.db import utc_now

        session = await launch(client)
        async with database.transaction() as blocker:
            # The block has revoked the session (row locked) but not yet committed.
            await store.set_blocked(blocker, user_id="player-1", blocked=True, actor="test", now=utc_now())
            exchange = asyncio.create_task(authenticate(client, session))
            await asyncio.sleep(0.3)
            assert not exchange.done()
        response = await exchange
        assert response.status_code == 400
        assert response.json() == failure("USER_BLOCKED", "the player is blocked")

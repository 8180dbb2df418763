"""Headers that identify a caller count only once: a second copy is refused before anything else.

A gateway that appends its verified X-User-Id to the browser's instead of replacing it would
otherwise let the first copy, the player's own, win.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import BETLINK_KEY, GATEWAY_KEY
from tests.helpers import auth_body, failure, launch

BEARER = ("Authorization", f"Bearer {GATEWAY_KEY}")

GATEWAY_ROUTES = [
    ("POST", "/betlink/session"),
    ("POST", "/betlink/sessions/introspect"),
    ("GET", "/bidpaw/open-session"),
    ("PUT", "/players/victim/block"),
    ("DELETE", "/players/victim/block"),
]


def _problem(status: int, detail: str) -> dict[str, object]:
    titles = {400: "Bad Request", 401: "Unauthorized"}
    return {"type": "about:blank", "title": titles[status], "status": status, "detail": detail}


async def _send(
    client: httpx.AsyncClient, method: str, path: str, headers: list[tuple[str, str]]
) -> httpx.Response:
    body = b'{"operatorSessionToken": "x"}' if path.endswith("introspect") else None
    return await client.request(method, path, headers=headers, content=body)


class TestGatewayHeaders:
    @pytest.mark.parametrize(("method", "path"), GATEWAY_ROUTES)
    async def test_a_second_x_user_id_is_400(self, client: httpx.AsyncClient, method: str, path: str) -> None:
        headers = [BEARER, ("X-User-Id", "attacker-chosen"), ("X-User-Id", "verified-by-gateway")]
        response = await _send(client, method, path, headers)
        assert response.status_code == 400
        assert response.json() == _problem(400, "X-User-Id must be sent exactly once")

    @pytest.mark.parametrize(("method", "path"), GATEWAY_ROUTES)
    async def test_a_second_authorization_is_401(
        self, client: httpx.AsyncClient, method: str, path: str
    ) -> None:
        headers = [BEARER, ("Authorization", "Bearer other"), ("X-User-Id", "p1")]
        response = await _send(client, method, path, headers)
        assert response.status_code == 401
        assert response.json() == _problem(401, "Authorization must be sent exactly once")

    @pytest.mark.parametrize("name", ["X-User-Country", "X-User-Currency"])
    @pytest.mark.parametrize(("method", "path"), GATEWAY_ROUTES)
    async def test_a_second_country_or_currency_is_400_on_every_gateway_route(
        self, client: httpx.AsyncClient, method: str, path: str, name: str
    ) -> None:
        # Two copies, even two equal valid ones: which one the gateway verified is unknown.
        headers = [BEARER, ("X-User-Id", "p1"), (name, "DE" if "Country" in name else "EUR")]
        response = await _send(client, method, path, [*headers, headers[-1]])
        assert response.status_code == 400
        assert response.json() == _problem(400, f"{name} must be sent exactly once")

    @pytest.mark.parametrize(
        ("repeated", "detail"),
        [
            (["Authorization", "X-User-Id", "X-User-Country", "X-User-Currency"], None),
            (["X-User-Id", "X-User-Country", "X-User-Currency"], "X-User-Id must be sent exactly once"),
            (["X-User-Country", "X-User-Currency"], "X-User-Country must be sent exactly once"),
        ],
    )
    async def test_in_the_contracts_order_before_the_key_and_the_values(
        self, client: httpx.AsyncClient, repeated: list[str], detail: str | None
    ) -> None:
        values = {
            "Authorization": "Bearer wrong",
            "X-User-Id": "p1",
            "X-User-Country": "1",
            "X-User-Currency": "X",
        }
        headers = [
            (name, value) for name, value in values.items() for _ in range(2 if name in repeated else 1)
        ]
        response = await _send(client, "GET", "/bidpaw/open-session", headers)
        if detail is None:
            assert response.json() == _problem(401, "Authorization must be sent exactly once")
        else:
            assert response.json() == _problem(400, detail)

    async def test_checked_before_the_key_itself(self, client: httpx.AsyncClient) -> None:
        headers = [("Authorization", "Bearer wrong"), ("X-User-Id", "a"), ("X-User-Id", "b")]
        response = await _send(client, "POST", "/betlink/session", headers)
        assert response.status_code == 400

    async def test_a_block_with_two_ids_blocks_nobody(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        headers = [BEARER, ("X-User-Id", "a"), ("X-User-Id", "b")]
        assert (await _send(client, "PUT", "/players/victim/block", headers)).status_code == 400
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM players"))).scalar() == 0

    async def test_one_copy_of_each_is_fine(self, client: httpx.AsyncClient) -> None:
        response = await _send(client, "POST", "/betlink/session", [BEARER, ("X-User-Id", "p1")])
        assert response.status_code == 201


class TestBetLinkHeaders:
    async def _authenticate(
        self, client: httpx.AsyncClient, headers: list[tuple[str, str]]
    ) -> httpx.Response:
        session = await launch(client)
        body = httpx.Request("POST", "/", json=auth_body(session)).content
        return await client.post(
            "/betlink/authenticate", headers=[*headers, ("Content-Type", "application/json")], content=body
        )

    async def test_a_second_api_key_is_403(self, client: httpx.AsyncClient) -> None:
        key = str(uuid.uuid4())
        headers = [("X-API-Key", BETLINK_KEY), ("X-API-Key", BETLINK_KEY), ("X-Idempotency-Key", key)]
        response = await self._authenticate(client, headers)
        assert response.status_code == 403
        assert response.json() == failure("AUTHENTICATION_FAILED", "X-API-Key must be sent exactly once")

    async def test_a_second_idempotency_key_is_400(self, client: httpx.AsyncClient) -> None:
        headers = [
            ("X-API-Key", BETLINK_KEY),
            ("X-Idempotency-Key", str(uuid.uuid4())),
            ("X-Idempotency-Key", str(uuid.uuid4())),
        ]
        response = await self._authenticate(client, headers)
        assert response.status_code == 400
        assert response.json() == failure("MISSING_PARAMETER", "X-Idempotency-Key must be sent exactly once")

    async def test_a_second_api_key_wins_over_a_second_idempotency_key(
        self, client: httpx.AsyncClient
    ) -> None:
        key = str(uuid.uuid4())
        headers = [
            ("X-API-Key", "a"),
            ("X-API-Key", "b"),
            ("X-Idempotency-Key", key),
            ("X-Idempotency-Key", key),
        ]
        assert (await self._authenticate(client, headers)).status_code == 403

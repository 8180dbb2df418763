"""DATABASE_URL's query parameters mean the same on every path that connects (request path, Alembic)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from partner_gateway.db import asyncpg_dsn
from partner_gateway.schema import upgrade
from tests.conftest import GATEWAY_HEADERS


def _with_ssl(url: str, mode: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}ssl={mode}"


class TestSslParameter:
    def test_becomes_asyncpgs_sslmode_in_the_request_paths_dsn(self) -> None:
        dsn = asyncpg_dsn("postgresql+asyncpg://gw:pw@db:5432/gw?ssl=verify-full")
        assert dsn == "postgresql://gw:pw@db:5432/gw?sslmode=verify-full"

    async def test_the_service_and_migrate_both_connect_with_it(
        self, make_client: Callable[..., Any], database_url: str
    ) -> None:
        url = _with_ssl(database_url, "disable")  # the embedded server has no TLS on its socket
        await asyncio.to_thread(upgrade, url)  # Alembic runs its own event loop
        client: httpx.AsyncClient = await make_client(database_url=url)
        assert (await client.get("/readyz")).status_code == 200
        response = await client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "p1"})
        assert response.status_code == 201

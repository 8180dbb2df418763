"""The request path's database layer: statements, the pool, the connection mode."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.db import Database, Statement, connection_mode, create_database
from partner_gateway.errors import is_database_unavailable
from tests.conftest import GATEWAY_HEADERS, app_of, make_settings

BACKEND_PID = Statement("pid", "SELECT pg_backend_pid()")


class TestStatement:
    def test_named_binds_become_numbered_ones_in_first_use_order(self) -> None:
        # As in SQLAlchemy's text(): `::` is a cast, never a bind.
        statement = Statement("example", "SELECT :b, :a, CAST(:b AS text), '10:30'::time, x::int FROM t")
        assert statement.sql == "SELECT $1, $2, CAST($1 AS text), '10:30'::time, x::int FROM t"
        assert statement.params == ("b", "a")
        assert statement.args({"a": 1, "b": 2}) == [2, 1]


class TestConnectionMode:
    def test_direct_mode_pins_read_committed_and_every_bound_at_start_up(self) -> None:
        mode = connection_mode(make_settings("postgresql+asyncpg://x@/x", db_timeout_seconds=2))
        assert mode.server_settings == {
            "application_name": "partner-gateway",
            "default_transaction_isolation": "read committed",
            "lock_timeout": "2000",
            "statement_timeout": "2000",
            "idle_in_transaction_session_timeout": "8000",
        }
        assert mode.begin == "BEGIN ISOLATION LEVEL READ COMMITTED"


class TestPool:
    async def test_overflow_connections_are_closed_once_returned(self, database_url: str) -> None:
        settings = make_settings(database_url, db_pool_size=1, db_max_overflow=1)
        database = create_database(settings, database_url)
        try:
            async with database.statement(), database.statement():
                assert (database.pool.in_use, database.pool.idle) == (2, 0)
            assert (database.pool.in_use, database.pool.idle) == (0, 1)
        finally:
            await database.close()

    async def test_a_failed_transaction_is_rolled_back_and_its_connection_reused(
        self, database_url: str
    ) -> None:
        database = create_database(make_settings(database_url), database_url)
        broken = Statement("broken", "SELECT 1 / 0")
        try:
            with pytest.raises(Exception, match="division by zero"):
                async with database.transaction() as conn:
                    await conn.fetchval(broken)
            assert (database.pool.in_use, database.pool.idle) == (0, 1)
            async with database.transaction() as conn:
                assert await conn.fetchval(Statement("one", "SELECT 1")) == 1
                rows = await conn.fetch(Statement("series", "SELECT generate_series(1, :n) AS i"), n=3)
                assert [row["i"] for row in rows] == [1, 2, 3]
        finally:
            await database.close()


async def _warm(database: Database, count: int) -> list[int]:
    """Open `count` connections at once and return them to the pool; their backends' pids."""
    async with AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(database.statement()) for _ in range(count)]
        pids = [await conn.fetchval(BACKEND_PID) for conn in conns]
    assert (database.pool.in_use, database.pool.idle) == (0, count)
    return pids


async def _alive(engine: AsyncEngine, pids: list[int]) -> set[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:p)"), {"p": pids})
        return {row[0] for row in rows}


async def _gone(engine: AsyncEngine, pids: list[int], *, within: float = 5) -> set[int]:
    """The backends of `pids` still there after `within` seconds (their client closed: they exit)."""
    deadline = time.monotonic() + within
    while (left := await _alive(engine, pids)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return left


async def _sleep_past_the_deadline(database: Database, pids: list[int]) -> None:
    async with database.transaction() as conn:
        pids.append(await conn.fetchval(BACKEND_PID))
        # No server timeout: only the service's deadline (DB_TIMEOUT_SECONDS + 1 s) ends this.
        await conn.execute(Statement("unbounded", "SET LOCAL statement_timeout = 0"))
        await conn.execute(Statement("sleep", "SELECT pg_sleep(4)"))


class TestPoolDefects:
    """The home-made pool's three defects (issue 21), each gone with asyncpg's pool."""

    async def test_a_deadline_cut_ends_one_connection_and_keeps_the_idle_ones(
        self, database_url: str, engine: AsyncEngine
    ) -> None:
        database = create_database(
            make_settings(database_url, db_pool_size=10, db_timeout_seconds=0.5), database_url
        )
        try:
            warm = await _warm(database, 10)
            started = time.monotonic()
            cut: list[int] = []
            with pytest.raises(asyncpg.ConnectionDoesNotExistError) as raised:
                await _sleep_past_the_deadline(database, cut)
            assert is_database_unavailable(raised.value)
            assert time.monotonic() - started < 3
            assert (database.pool.in_use, database.pool.idle) == (0, 9)
            kept = [pid for pid in warm if pid not in cut]
            async with AsyncExitStack() as stack:  # the nine are reused: no connection was opened
                conns = [await stack.enter_async_context(database.statement()) for _ in range(9)]
                assert sorted([await c.fetchval(BACKEND_PID) for c in conns]) == sorted(kept)
        finally:
            await database.close()

    async def test_frozen_idle_backends_cost_no_request_with_pre_ping_and_none_is_leaked(
        self, make_client: Callable[..., Any], engine: AsyncEngine
    ) -> None:
        client: httpx.AsyncClient = await make_client(
            db_pool_size=5, db_pool_pre_ping=True, db_timeout_seconds=4
        )
        database: Database = app_of(client).state.database
        frozen = await _warm(database, 5)
        for pid in frozen:  # the backends stop answering; their connections stay open
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            statuses = [
                (
                    await client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "p"})
                ).status_code
                for _ in range(5)
            ]
            elapsed = time.monotonic() - started
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        assert statuses == [201] * 5, f"{statuses} in {elapsed:.1f} s"
        # Each unanswered ping ended its connection: once thawed, every frozen backend finds its
        # client gone and exits. A connection left to the garbage collector would stay open.
        assert await _gone(engine, frozen) == set()

    async def test_a_connection_released_after_close_is_closed_too(
        self, database_url: str, engine: AsyncEngine
    ) -> None:
        database = create_database(make_settings(database_url), database_url)
        async with database.statement() as conn:
            pid = await conn.fetchval(BACKEND_PID)
            closing = asyncio.create_task(database.close())  # shutdown, a request still in flight
            await asyncio.sleep(0.2)
            assert await conn.fetchval(Statement("one", "SELECT 1")) == 1
        await asyncio.wait_for(closing, timeout=10)
        assert await _gone(engine, [pid]) == set()
        with pytest.raises(Exception, match="closed") as raised:
            async with database.statement():
                pass
        assert is_database_unavailable(raised.value)


class TestExpireConnections:
    async def test_every_connection_open_now_is_replaced_idle_at_once_busy_at_release(
        self, database_url: str, engine: AsyncEngine
    ) -> None:
        database = create_database(make_settings(database_url, db_pool_size=3), database_url)
        try:
            old = await _warm(database, 2)
            async with database.statement() as busy:
                old.append(await busy.fetchval(BACKEND_PID))
                await database.pool.expire_connections()  # e.g. the primary moved
                assert (database.pool.in_use, database.pool.idle) == (1, 0)
            assert (database.pool.in_use, database.pool.idle) == (0, 0)
            assert await _gone(engine, old) == set()
            async with database.statement() as conn:
                assert await conn.fetchval(BACKEND_PID) not in old
        finally:
            await database.close()

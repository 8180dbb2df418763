"""The request path's database layer: statements, the pool, the connection mode."""

from __future__ import annotations

import pytest

from partner_gateway.db import Statement, connection_mode, create_database
from tests.conftest import make_settings


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

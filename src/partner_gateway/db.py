"""Engine, metadata and the one-transaction-per-request dependency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from partner_gateway.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The single waits fire first (clean errors); the deadline catches their sum.
DEADLINE_GRACE_SECONDS = 1.0
APPLICATION_NAME = "partner-gateway"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utc_now() -> datetime:
    return datetime.now(UTC)


def session_bounds(settings: Settings) -> dict[str, str]:
    """What every server session must carry: the waits of DB_TIMEOUT_SECONDS and READ COMMITTED.

    A lock wait (a duplicate request queued behind the first one's row lock) and a statement
    give up after the timeout; a transaction left idle is ended by the server.
    """
    millis = int(settings.db_timeout_seconds * 1000)
    return {
        "lock_timeout": str(millis),
        "statement_timeout": str(millis),
        "idle_in_transaction_session_timeout": str(millis * 4),
        "default_transaction_isolation": "read committed",
    }


@dataclass(frozen=True)
class ConnectionMode:
    """How this process connects: straight to PostgreSQL, or through PgBouncer (DB_POOLER).

    Chosen once at start-up; everything else is the same in both modes. `role_defaults` are
    what `migrate` writes as the role's defaults in the database (`ALTER ROLE ... IN DATABASE
    ... SET`), for the mode where the session bounds cannot travel with the connection.
    """

    pooler: str
    server_settings: dict[str, str]
    statement_cache_size: int
    role_defaults: dict[str, str]

    def connect_args(self, *, timeout: float) -> dict[str, Any]:
        return {
            "timeout": timeout,
            # Longer than the request deadline (timeout + 1 s), which is then what fires first.
            "command_timeout": timeout + 2,
            "server_settings": self.server_settings,
            "statement_cache_size": self.statement_cache_size,
        }


def connection_mode(settings: Settings) -> ConnectionMode:
    bounds = session_bounds(settings)
    if settings.db_pooler == "pgbouncer":
        # PgBouncer in transaction mode refuses these as start-up parameters (and with
        # ignore_startup_parameters silently drops them), so they are the role's defaults,
        # which every server connection it opens starts with. It hands each transaction to
        # any server connection: a named prepared statement (asyncpg's statement cache) would
        # meet another client's, and return that one's results. With the cache off asyncpg
        # re-parses its unnamed statement in the same round trip as each execution.
        return ConnectionMode(
            pooler="pgbouncer",
            server_settings={"application_name": APPLICATION_NAME},
            statement_cache_size=0,
            role_defaults=bounds,
        )
    return ConnectionMode(
        pooler="none",
        server_settings={"application_name": APPLICATION_NAME, **bounds},
        statement_cache_size=100,  # asyncpg's default
        role_defaults={},
    )


def create_engine(settings: Settings, url: str) -> AsyncEngine:
    """An engine whose every wait is bounded by DB_TIMEOUT_SECONDS.

    The pool wait and the connect give up after the timeout, each statement and lock wait
    after the server-side bounds of `session_bounds`, so an overloaded or absent database
    becomes a fast, retryable 503 instead of a hung request.
    """
    timeout = settings.db_timeout_seconds
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=timeout,
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args=connection_mode(settings).connect_args(timeout=timeout),
    )


class Database:
    """The two ways a request uses the database, both committed before the response is sent.

    `transaction()`: one transaction for several statements; an exception rolls all back.
    `statement()`: a connection in autocommit for a request whose work is a single statement,
    which is then its own transaction: no BEGIN and COMMIT round trips.

    Each wait is bounded on its own (pool, connect, lock, statement); the deadline bounds their
    sum, so a request never waits on the database much longer than DB_TIMEOUT_SECONDS.
    """

    def __init__(self, engine: AsyncEngine, *, timeout: float) -> None:
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._deadline = timeout + DEADLINE_GRACE_SECONDS

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._bounded(self.engine, transaction=True)

    def statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._bounded(self._autocommit, transaction=False)

    @asynccontextmanager
    async def _bounded(self, engine: AsyncEngine, *, transaction: bool) -> AsyncIterator[AsyncConnection]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        async with asyncio.timeout_at(deadline):
            conn = await engine.connect()
        # Past the deadline the connection is cut, not cancelled: a cancelled statement makes
        # SQLAlchemy close the connection gracefully, which waits up to 2 s more on a server
        # that stopped answering. Cut, the statement in flight fails at once as a disconnect
        # (a 503), and the server rolls back the transaction of a connection that went away.
        cut: asyncio.TimerHandle | None = None
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            cut = loop.call_at(deadline, driver.terminate)
            if transaction:
                await conn.begin()
            yield conn
            if transaction:
                await conn.commit()
        finally:
            try:
                await conn.close()  # rolls back a transaction still open
            finally:
                if cut is not None:
                    cut.cancel()


async def database_of(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


DatabaseDep = Annotated[Database, Depends(database_of)]


# What a database that is down, unreachable, refusing or failing raises through SQLAlchemy or
# asyncpg: what the long-running `purge --every` survives and what the CLI reports in one line.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def describe_failure(exc: BaseException, url: str) -> str:
    """One line for an operator: where the database is and what went wrong, never the password."""
    location = make_url(url)
    host = location.host or location.query.get("host") or "localhost"
    cause: BaseException = exc
    while type(cause).__module__.startswith("sqlalchemy"):  # its wrappers quote SQL and links
        nested = cause.orig if isinstance(cause, DBAPIError) else cause.__cause__
        if nested is None:
            break
        cause = nested
    message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    if location.password:
        message = message.replace(location.password, "***")
    return f"database at {host}:{location.port or 5432}: {type(cause).__name__}: {message}"

"""Engine, metadata and the one-transaction-per-request dependency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import MetaData
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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_engine(settings: Settings, url: str) -> AsyncEngine:
    """An engine whose every wait is bounded by DB_TIMEOUT_SECONDS.

    The pool wait, the connect, each statement and each lock wait (a duplicate request queued
    behind the first one's row lock) give up after the timeout, so an overloaded or absent
    database becomes a fast, retryable 503 instead of a hung request.
    """
    timeout = settings.db_timeout_seconds
    millis = str(int(timeout * 1000))
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=timeout,
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args={
            "timeout": timeout,
            "command_timeout": timeout + 1,
            "server_settings": {
                "application_name": "partner-gateway",
                "lock_timeout": millis,
                "statement_timeout": millis,
                "idle_in_transaction_session_timeout": str(int(timeout * 4000)),
            },
        },
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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with asyncio.timeout(self._deadline), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        async with asyncio.timeout(self._deadline), self._autocommit.connect() as conn:
            yield conn


async def database_of(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


DatabaseDep = Annotated[Database, Depends(database_of)]

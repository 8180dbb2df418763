"""Engine, metadata and the one-transaction-per-request dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


async def get_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """One transaction per request, committed before the response is sent.

    Declared with `scope="function"`: the commit runs when the endpoint returns, so a commit
    failure is still the request's answer. An exception rolls everything back together.
    """
    engine: AsyncEngine = request.app.state.engine
    async with engine.begin() as connection:
        yield connection


DbDep = Annotated[AsyncConnection, Depends(get_connection, scope="function")]

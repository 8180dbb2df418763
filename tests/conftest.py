"""Test fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL) migrated once with Alembic."""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from partner_gateway.app import create_app
from partner_gateway.config import Settings
from partner_gateway.db import Database, create_database
from partner_gateway.embedded import embedded_postgres
from partner_gateway.schema import upgrade

GATEWAY_KEY = "gw-test-key-0001"
GATEWAY_KEY_ROTATED = "gw-test-key-0002"
BETLINK_KEY = "bl-test-key-0001"
BETLINK_KEY_ROTATED = "bl-test-key-0002"
OPERATOR_ID = "op-test"
REDIRECT_URL = "https://casino.example/"
ENCRYPTION_KEY = base64.b64encode(bytes(range(32))).decode()
GATEWAY_HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}
TABLES = (
    "idempotency_keys",
    "user_sessions",
    "player_block_events",
    "players",
    "bidpaw_sessions",
    "wallet_transactions",
)

AppFactory = Callable[..., FastAPI]


def pytest_configure(config: pytest.Config) -> None:
    # pytest has no SIGTERM handler: without this, a terminated run leaks the embedded server.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_DATABASE_URL, or an embedded PostgreSQL for this run; migrated with Alembic."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        upgrade(external)
        yield external
        return
    with embedded_postgres(tmp_path_factory.mktemp("pg")) as url:
        upgrade(url)
        yield url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "gateway_api_keys": f"{GATEWAY_KEY},{GATEWAY_KEY_ROTATED}",
        "betlink_api_keys": f"{BETLINK_KEY},{BETLINK_KEY_ROTATED}",
        "betlink_operator_id": OPERATOR_ID,
        "betlink_redirect_url": REDIRECT_URL,
        "data_encryption_key": ENCRYPTION_KEY,
        "db_timeout_seconds": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A separate engine for the tests' own queries (not the app's pool)."""
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    """The service's own kind of database handle, for tests that call the store or services."""
    database = create_database(settings, settings.database_url or "")
    yield database
    await database.close()


@pytest.fixture(autouse=True)
async def _clean_tables(engine: AsyncEngine) -> None:
    # Isolation by truncation rather than a rolled-back outer transaction: the concurrency tests
    # need real parallel transactions on separate connections, and other processes see the data.
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)}"))


@pytest.fixture
async def make_client(database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Build an app with settings overrides, run its lifespan, return an httpx client for it."""
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def factory(**overrides: Any) -> httpx.AsyncClient:
        app = create_app(make_settings(overrides.pop("database_url", database_url), **overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test"
        )
        opened.append((lifespan, client))
        return client

    yield factory
    for lifespan, client in reversed(opened):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await make_client()
    return result


def app_of(client: httpx.AsyncClient) -> FastAPI:
    """The app behind a client from `make_client`."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, FastAPI)
    return app


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(params=["read committed", "repeatable read", "serializable"])
async def database_default_isolation(
    request: pytest.FixtureRequest, engine: AsyncEngine
) -> AsyncIterator[str]:
    """The test database's default isolation set to each level: the service must not depend on it."""
    level: str = request.param

    async def set_default(value: str | None) -> None:
        change = (
            "RESET default_transaction_isolation"
            if value is None
            else "SET default_transaction_isolation = %L"
        )
        sql = (
            f"DO $$ BEGIN EXECUTE format('ALTER DATABASE %I {change}', current_database(), '{value}'); END $$"
        )
        async with engine.begin() as conn:
            await conn.execute(text(sql))

    await set_default(level)
    yield level
    await set_default(None)


# Timings of real-process tests outside tests/deploy (the wallet's), shown in the run's summary.
PROCESS_TIMINGS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if PROCESS_TIMINGS:
        terminalreporter.section("process timings")
        for line in PROCESS_TIMINGS:
            terminalreporter.write_line(line)

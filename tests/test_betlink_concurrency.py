"""Exactly-once under concurrency: real parallel requests, each on its own database connection."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import auth_body, auth_headers, launch
from tests.processes import free_port, serve, wait_ready

URL = "/betlink/authenticate"


async def _count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


@pytest.mark.usefixtures("database_default_isolation")
class TestSameKeyStorm:
    async def test_100_parallel_same_key_requests_issue_one_token_and_identical_bodies(
        self, make_client: Callable[..., Any], engine: AsyncEngine
    ) -> None:
        client = await make_client(db_pool_size=20, db_max_overflow=30, db_timeout_seconds=10)
        session = await launch(client)
        key, body = str(uuid.uuid4()), auth_body(session)

        async def call(i: int) -> httpx.Response:
            # A retry may carry a new requestId and timestamp; the answer is still the first one.
            varied = {**body, "requestId": str(uuid.uuid4())} if i % 2 else body
            response: httpx.Response = await client.post(URL, headers=auth_headers(key), json=varied)
            return response

        responses = await asyncio.gather(*(call(i) for i in range(100)))
        assert Counter(r.status_code for r in responses) == {200: 100}
        assert len({r.content for r in responses}) == 1
        assert (
            await _count(engine, "SELECT count(*) FROM user_sessions WHERE session_token_hash IS NOT NULL")
            == 1
        )
        assert await _count(engine, "SELECT count(*) FROM idempotency_keys") == 1


@pytest.mark.usefixtures("database_default_isolation")
class TestOneLaunchTokenManyKeys:
    async def test_50_parallel_keys_on_one_launch_token_give_exactly_one_200(
        self, make_client: Callable[..., Any], engine: AsyncEngine
    ) -> None:
        client = await make_client(db_pool_size=20, db_max_overflow=30, db_timeout_seconds=10)
        session = await launch(client)
        body = auth_body(session)
        responses = await asyncio.gather(
            *(client.post(URL, headers=auth_headers(), json=body) for _ in range(50))
        )
        assert Counter(r.status_code for r in responses) == {200: 1, 401: 49}
        assert {r.json()["errorCode"] for r in responses if r.status_code == 401} == {"INVALID_SESSION"}
        assert await _count(engine, "SELECT count(*) FROM idempotency_keys") == 1


@pytest.fixture
def two_processes(database_url: str) -> Iterator[list[str]]:
    """Two real `partner-gateway serve` processes on one database."""
    ports = [free_port(), free_port()]
    procs = [
        serve(database_url, port, DB_POOL_SIZE="20", DB_MAX_OVERFLOW="20", DB_TIMEOUT_SECONDS="10")
        for port in ports
    ]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, proc in zip(urls, procs, strict=True):
            wait_ready(url, proc)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


@pytest.mark.slow
class TestAcrossProcesses:
    async def test_same_key_storm_across_two_serve_processes(
        self, two_processes: list[str], engine: AsyncEngine
    ) -> None:
        async with (
            httpx.AsyncClient(base_url=two_processes[0], timeout=30) as first,
            httpx.AsyncClient(
                base_url=two_processes[1], timeout=30, limits=httpx.Limits(max_connections=100)
            ) as second,
        ):
            session = await launch(first)
            key, body = str(uuid.uuid4()), auth_body(session)
            clients = [first, second]
            responses = await asyncio.gather(
                *(clients[i % 2].post(URL, headers=auth_headers(key), json=body) for i in range(60))
            )
        assert Counter(r.status_code for r in responses) == {200: 60}
        assert len({r.content for r in responses}) == 1
        assert (
            await _count(engine, "SELECT count(*) FROM user_sessions WHERE session_token_hash IS NOT NULL")
            == 1
        )

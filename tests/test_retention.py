"""`partner-gateway purge`: bounded batches, safe from several replicas at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.config import Settings
from partner_gateway.db import Database, utc_now
from partner_gateway.maintenance import purge_expired, session_cutoff


async def _seed(engine: AsyncEngine, *, expired: int, live: int, settings: Settings) -> None:
    now = utc_now()
    old = session_cutoff(settings, now=now) - timedelta(seconds=1)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO idempotency_keys (key, fingerprint, response, created_at, expires_at) "
                "SELECT gen_random_uuid(), '\\x00', '\\x00', now(), "
                "CASE WHEN g <= :expired THEN now() - interval '1 second' ELSE now() + interval '1 day' END "
                "FROM generate_series(1, :total) g"
            ),
            {"expired": expired, "total": expired + live},
        )
        await conn.execute(
            text(
                "INSERT INTO user_sessions (user_id, launch_token_hash, launch_expires_at, created_at) "
                "SELECT 'p', sha256(g::text::bytea), now(), CASE WHEN g <= :expired THEN :old ELSE now() END "
                "FROM generate_series(1, :total) g"
            ),
            {"expired": expired, "total": expired + live, "old": old},
        )


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


class TestPurge:
    async def test_deletes_only_expired_rows_in_batches(
        self, engine: AsyncEngine, settings: Settings, database: Database
    ) -> None:
        await _seed(engine, expired=250, live=30, settings=settings)
        purged = await purge_expired(database, settings=settings, now=utc_now(), batch=100)
        assert (purged.keys, purged.sessions) == (250, 250)
        assert await _count(engine, "idempotency_keys") == 30
        assert await _count(engine, "user_sessions") == 30

    async def test_several_replicas_at_once_split_the_work(
        self, engine: AsyncEngine, settings: Settings, database: Database
    ) -> None:
        await _seed(engine, expired=600, live=10, settings=settings)
        results = await asyncio.gather(
            *(purge_expired(database, settings=settings, now=utc_now(), batch=50) for _ in range(3))
        )
        assert sum(r.keys for r in results) == 600
        assert sum(r.sessions for r in results) == 600
        assert await _count(engine, "idempotency_keys") == 10


async def test_a_set_stop_ends_the_purge_between_batches(
    engine: AsyncEngine, settings: Settings, database: Database
) -> None:
    await _seed(engine, expired=30, live=0, settings=settings)
    stop = asyncio.Event()
    stop.set()  # SIGTERM arrived: no further batch starts
    purged = await purge_expired(database, settings=settings, now=utc_now(), batch=10, stop=stop)
    assert (purged.keys, purged.sessions) == (0, 0)
    assert await _count(engine, "idempotency_keys") == 30

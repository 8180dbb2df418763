"""`partner-gateway purge`: bounded batches, safe from several replicas at once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.config import Settings
from partner_gateway.db import Database, utc_now
from partner_gateway.maintenance import BIDPAW_SESSION_RETENTION, purge_expired, session_cutoff


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


async def _seed_bidpaw(engine: AsyncEngine, *, old: int, recent: int, now: datetime) -> None:
    """`old` records last used just past the 90 days (created long before), `recent` just within."""
    past, within = (
        now - BIDPAW_SESSION_RETENTION - timedelta(seconds=1),
        now - BIDPAW_SESSION_RETENTION + timedelta(minutes=1),
    )
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO bidpaw_sessions (user_id, game_id, currency, session, created_at, last_used_at) "
                "SELECT 'p', 'g', 'EUR', 's' || g, :created, "
                "CASE WHEN g <= :old THEN CAST(:past AS timestamptz) ELSE CAST(:within AS timestamptz) END "
                "FROM generate_series(1, :total) g"
            ),
            {
                "old": old,
                "total": old + recent,
                "past": past,
                "within": within,
                "created": now - timedelta(days=400),
            },
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


class TestBidPawSessionRecords:
    async def test_go_90_days_after_their_last_use_not_their_creation(
        self, engine: AsyncEngine, settings: Settings, database: Database
    ) -> None:
        now = utc_now()
        await _seed_bidpaw(engine, old=120, recent=15, now=now)
        purged = await purge_expired(database, settings=settings, now=now, batch=50)
        assert (purged.keys, purged.sessions, purged.bidpaw_sessions) == (0, 0, 120)
        assert await _count(engine, "bidpaw_sessions") == 15
        async with engine.connect() as conn:
            oldest = (await conn.execute(text("SELECT min(last_used_at) FROM bidpaw_sessions"))).scalar_one()
        assert oldest > now - BIDPAW_SESSION_RETENTION

    async def test_several_replicas_at_once_split_the_work(
        self, engine: AsyncEngine, settings: Settings, database: Database
    ) -> None:
        now = utc_now()
        await _seed_bidpaw(engine, old=300, recent=5, now=now)
        results = await asyncio.gather(
            *(purge_expired(database, settings=settings, now=now, batch=40) for _ in range(3))
        )
        assert sum(r.bidpaw_sessions for r in results) == 300
        assert await _count(engine, "bidpaw_sessions") == 5

    async def test_a_record_in_use_while_purge_runs_is_skipped_not_waited_for(
        self, engine: AsyncEngine, settings: Settings, database: Database
    ) -> None:
        now = utc_now()
        await _seed_bidpaw(engine, old=3, recent=0, now=now)
        async with engine.connect() as holder:
            await holder.begin()
            # A wallet callback moving last_used_at of one record, not yet committed.
            await holder.execute(text("UPDATE bidpaw_sessions SET last_used_at = now() WHERE session = 's1'"))
            purged = await asyncio.wait_for(purge_expired(database, settings=settings, now=now, batch=10), 10)
            await holder.commit()
        assert purged.bidpaw_sessions == 2
        async with engine.connect() as conn:
            left = (await conn.execute(text("SELECT session FROM bidpaw_sessions"))).scalars().all()
        assert left == ["s1"]

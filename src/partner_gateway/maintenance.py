"""Retention: `partner-gateway purge` deletes processed keys and sessions past their use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from partner_gateway import store
from partner_gateway.config import Settings

# A session is dead once its launch token and its session token have both expired; a day more
# keeps it around for support questions ("was this player's token live at 14:02?").
SESSION_GRACE = timedelta(days=1)


@dataclass(frozen=True)
class Purged:
    keys: int
    sessions: int


def session_cutoff(settings: Settings, *, now: datetime) -> datetime:
    lifetime = settings.betlink_launch_token_ttl_seconds + settings.betlink_session_ttl_seconds
    return now - timedelta(seconds=lifetime) - SESSION_GRACE


async def purge_expired(
    engine: AsyncEngine, *, settings: Settings, now: datetime, batch: int = 1000
) -> Purged:
    """Delete in batches of `batch` rows, each in its own transaction, until nothing is left."""
    cutoff = session_cutoff(settings, now=now)
    keys = await _drain(engine, lambda conn: store.purge_keys(conn, now=now, batch=batch), batch=batch)
    sessions = await _drain(
        engine, lambda conn: store.purge_sessions(conn, before=cutoff, batch=batch), batch=batch
    )
    return Purged(keys=keys, sessions=sessions)


async def _drain(
    engine: AsyncEngine, delete: Callable[[AsyncConnection], Awaitable[int]], *, batch: int
) -> int:
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = await delete(conn)
        total += deleted
        if deleted < batch:
            return total

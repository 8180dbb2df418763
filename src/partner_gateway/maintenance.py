"""Retention: `partner-gateway purge [--every S]` deletes processed keys and sessions past their use,
and BidPaw session records BIDPAW_SESSION_RETENTION past their last use. `repeat` is the loop that
`purge --every` and `reconcile --every` run in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from partner_gateway import store
from partner_gateway.config import Settings
from partner_gateway.db import DATABASE_ERRORS, Connection, Database, utc_now
from partner_gateway.logs import get_logger

logger = get_logger(__name__)

# A session is dead once its launch token and its session token have both expired; a day more
# keeps it around for support questions ("was this player's token live at 14:02?").
SESSION_GRACE = timedelta(days=1)
# BidPaw's wallet callbacks are checked against these records; the contract keeps them at least
# 90 days after their last use.
BIDPAW_SESSION_RETENTION = timedelta(days=90)


@dataclass(frozen=True)
class Purged:
    keys: int
    sessions: int
    bidpaw_sessions: int


def session_cutoff(settings: Settings, *, now: datetime) -> datetime:
    lifetime = settings.betlink_launch_token_ttl_seconds + settings.betlink_session_ttl_seconds
    return now - timedelta(seconds=lifetime) - SESSION_GRACE


async def purge_expired(
    database: Database,
    *,
    settings: Settings,
    now: datetime,
    batch: int = 1000,
    stop: asyncio.Event | None = None,
) -> Purged:
    """Delete in batches of `batch` rows, each in its own transaction, until nothing is left
    or `stop` is set (checked between batches, so a SIGTERM never waits for a whole backlog)."""
    cutoff = session_cutoff(settings, now=now)
    stop = stop or asyncio.Event()
    keys = await _drain(
        database, lambda conn: store.purge_keys(conn, now=now, batch=batch), batch=batch, stop=stop
    )
    sessions = await _drain(
        database, lambda conn: store.purge_sessions(conn, before=cutoff, batch=batch), batch=batch, stop=stop
    )
    bidpaw_cutoff = now - BIDPAW_SESSION_RETENTION
    bidpaw_sessions = await _drain(
        database,
        lambda conn: store.purge_bidpaw_sessions(conn, before=bidpaw_cutoff, batch=batch),
        batch=batch,
        stop=stop,
    )
    return Purged(keys=keys, sessions=sessions, bidpaw_sessions=bidpaw_sessions)


async def _drain(
    database: Database,
    delete: Callable[[Connection], Awaitable[int]],
    *,
    batch: int,
    stop: asyncio.Event,
) -> int:
    total = 0
    while not stop.is_set():
        async with database.transaction() as conn:
            deleted = await delete(conn)
        total += deleted
        if deleted < batch:
            break
    return total


# After a failed run the loop retries sooner than `every`, doubling from this up to `every`
# (at most MAX_BACKOFF), so an outage costs one log line per attempt, not a busy loop.
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0

T = TypeVar("T")


async def repeat(
    work: Callable[[], Awaitable[T]],
    *,
    every: float,
    stop: asyncio.Event,
    event: str,
    report: Callable[[T], None],
    log: Any,
    on_failure: Callable[[BaseException], str],
) -> None:
    """`work` now and then every `every` seconds until `stop` is set, each result to `report`:
    the loop of `purge --every` and `reconcile --every`. A database failure is one line on `log`
    (`<event>.failed`, described by `on_failure`) and a retry with backoff."""
    failures = 0
    while not stop.is_set():
        try:
            result = await work()
        except DATABASE_ERRORS as exc:
            failures += 1
            wait = min(every, MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** min(failures - 1, 16))
            log.warning(f"{event}.failed", error=on_failure(exc), attempt=failures, retry_in_s=wait)
        else:
            failures, wait = 0, every
            report(result)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)


async def purge_every(
    database: Database,
    *,
    settings: Settings,
    every: float,
    stop: asyncio.Event,
    batch: int = 1000,
    on_failure: Callable[[BaseException], str] = repr,
) -> None:
    """Purge now and then every `every` seconds until `stop` is set; database failures are
    logged (one line each, through `on_failure`'s description) and retried with backoff."""

    def report(purged: Purged) -> None:
        logger.info(
            "purge.done", keys=purged.keys, sessions=purged.sessions, bidpaw_sessions=purged.bidpaw_sessions
        )

    await repeat(
        lambda: purge_expired(database, settings=settings, now=utc_now(), batch=batch, stop=stop),
        every=every,
        stop=stop,
        event="purge",
        report=report,
        log=logger,
        on_failure=on_failure,
    )

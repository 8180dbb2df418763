"""Following the primary of a replicated PostgreSQL: DATABASE_URL with several hosts.

asyncpg, like libpq, tries the hosts in order and keeps the first that passes
`target_session_attrs=read-write`. Alone, that writes to the wrong server when an old primary
comes back "as it was" after a failover: it is writable too, and may come first in the list. A
promotion starts a new timeline, so each new connection also reads its server's timeline, and a
server on an older timeline than one this process already wrote to is passed over (a fence
against split brain). One process that never saw the newer timeline cannot know; the failover
tooling (Patroni's leader lock, a managed database's own fencing) must keep an old primary from
coming back writable.

`PrimaryFinder.connect` has `asyncpg.connect`'s signature, so any pool can use it
(`asyncpg.create_pool(connect=...)` as well as ours).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from partner_gateway.logs import get_logger

logger = get_logger(__name__)

Connect = Callable[..., Awaitable[asyncpg.Connection]]

# The current WAL file's name begins with the timeline it is written on (8 hex digits). Both
# functions are open to every role; a server where they fail (not PostgreSQL proper) has no fence.
_TIMELINE = "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn())"

# What trying one host may raise before the next host is tried.
_HOST_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class StalePrimary(ConnectionError):
    """A writable server on an older timeline than one this process has written to."""


async def timeline(conn: asyncpg.Connection) -> int:
    """The timeline the server writes WAL on; 0 where the server cannot say."""
    try:
        name: str = await conn.fetchval(_TIMELINE)
        return int(name[:8], 16)
    except (asyncpg.PostgresError, ValueError, TypeError):
        return 0


class PrimaryFinder:
    """Connects to the writable host on the newest timeline, trying the last good one first.

    `dsns` maps each host (as written in DATABASE_URL) to a DSN for that host alone that carries
    `target_session_attrs`; asyncpg then refuses a standby at connect time. Each host gets its
    share of the connect timeout, so a host that does not answer at all (a partition) cannot
    use up the time the next host needs.
    """

    def __init__(self, dsns: dict[str, str]) -> None:
        self._dsns = dsns
        self._timeline = 0
        self._last_good: str | None = None
        self._stale: set[str] = set()

    def _order(self) -> list[str]:
        hosts = sorted(self._dsns, key=lambda host: (host != self._last_good, host in self._stale))
        return hosts  # sorted() is stable: otherwise the order DATABASE_URL gives

    async def connect(self, dsn: str | None = None, **kwargs: Any) -> asyncpg.Connection:
        """`asyncpg.connect`'s signature; `dsn` (the whole host list) is ignored: each host has its own."""
        timeout = kwargs.pop("timeout", 60.0) / len(self._dsns)
        failure: BaseException | None = None
        for host in self._order():
            try:
                conn: asyncpg.Connection = await asyncpg.connect(self._dsns[host], timeout=timeout, **kwargs)
            except _HOST_FAILURES as exc:
                failure = exc
                continue
            try:
                async with asyncio.timeout(timeout):
                    seen = await timeline(conn)
            except _HOST_FAILURES as exc:
                conn.terminate()
                failure = exc
                continue
            if seen < self._timeline:
                conn.terminate()
                self._stale.add(host)
                logger.warning(
                    "database.stale_primary_skipped", host=host, timeline=seen, newest=self._timeline
                )
                failure = StalePrimary(
                    f"{host} is writable but on timeline {seen}, older than {self._timeline}"
                )
                continue
            if self._last_good is not None and host != self._last_good:
                logger.warning("database.primary_moved", host=host, timeline=seen, was=self._last_good)
            self._timeline, self._last_good = seen, host
            self._stale.discard(host)
            return conn
        assert failure is not None
        raise failure

"""The schema's metadata (SQLAlchemy, for the models and Alembic) and the request path's database.

The request path runs on asyncpg directly: SQLAlchemy's `AsyncConnection` cost half the
service's throughput for identical SQL (bench/README.md). `Database` owns a small pool of
asyncpg connections and hands out `Connection`s that run the store's `Statement`s.

How connections are opened and transactions begun is one object chosen at start-up, a
`ConnectionMode`: straight to PostgreSQL, the timeouts and the isolation level travel as the
connection's start-up parameters. A transaction pooler (PgBouncer) refuses those; a mode for
it carries them another way (the role's defaults) and turns the statement cache off.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    nullcontext,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase

from partner_gateway.config import Settings, parse_database_url
from partner_gateway.errors import server_lost
from partner_gateway.logs import get_logger
from partner_gateway.metrics import DB_SERVER_LOST
from partner_gateway.primary import Connect, PrimaryFinder

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The single waits fire first (clean errors); the deadline catches their sum.
DEADLINE_GRACE_SECONDS = 1.0
# Connections are replaced after this long, as SQLAlchemy's pool_recycle did.
MAX_CONNECTION_AGE_SECONDS = 1800.0
# DB_POOL_PRE_PING: a reused connection that does not answer `SELECT 1` within this (or an
# eighth of DB_TIMEOUT_SECONDS, if less) is ended and the next one tried, so a few frozen
# backends cost one request some waiting, not a 503 each.
PING_TIMEOUT_SECONDS = 0.5
APPLICATION_NAME = "partner-gateway"

logger = get_logger(__name__)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utc_now() -> datetime:
    return datetime.now(UTC)


_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # `:name`, not a `::` cast


@dataclass(frozen=True)
class Statement:
    """One SQL statement of the store: written with `:name` binds, sent with `$n` ones."""

    name: str
    text: str  # as written, with `:name` binds (the bench reads these)
    sql: str = field(init=False)  # as sent
    params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        order: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        object.__setattr__(self, "sql", _BIND.sub(number, self.text))
        object.__setattr__(self, "params", tuple(order))

    def args(self, values: dict[str, Any]) -> list[Any]:
        return [values[name] for name in self.params]


# Opt-in tracing wraps each statement in a span; off, nothing is wrapped.
StatementObserver = Callable[[Statement], AbstractContextManager[object]]
_UNOBSERVED = nullcontext()


class Connection:
    """What the store runs statements on: a pooled asyncpg connection, inside the request's bounds."""

    __slots__ = ("_observe", "_raw")

    def __init__(self, raw: asyncpg.Connection, observe: StatementObserver | None) -> None:
        self._raw = raw
        self._observe = observe

    def _span(self, statement: Statement) -> AbstractContextManager[object]:
        return _UNOBSERVED if self._observe is None else self._observe(statement)

    async def fetch(self, statement: Statement, **values: Any) -> list[asyncpg.Record]:
        with self._span(statement):
            rows: list[asyncpg.Record] = await self._raw.fetch(statement.sql, *statement.args(values))
        return rows

    async def fetchrow(self, statement: Statement, **values: Any) -> asyncpg.Record | None:
        with self._span(statement):
            return await self._raw.fetchrow(statement.sql, *statement.args(values))

    async def fetchval(self, statement: Statement, **values: Any) -> Any:
        with self._span(statement):
            return await self._raw.fetchval(statement.sql, *statement.args(values))

    async def execute(self, statement: Statement, **values: Any) -> int:
        """Run a statement for its effect; the number of rows it touched."""
        with self._span(statement):
            status: str = await self._raw.execute(statement.sql, *statement.args(values))
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0


TIMEOUTS = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")


def session_bounds(settings: Settings) -> dict[str, str]:
    """What every server session must carry: the waits of DB_TIMEOUT_SECONDS and READ COMMITTED.

    A lock wait (a duplicate request queued behind the first one's row lock) and a statement
    give up after the timeout; a transaction left idle is ended by the server. Isolation is
    pinned whatever the database's default: a stricter level turns the waits the store relies
    on into serialization failures.
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
    """How this process connects and begins transactions: the one thing that differs by mode.

    Chosen once at start-up (`connection_mode`); everything else is the same in every mode.
    `begin` names the isolation level itself, so a transaction is READ COMMITTED even where
    the start-up parameters could not travel. `role_defaults` are what `migrate` would write as
    the role's defaults, for a mode (a transaction pooler) where the bounds cannot travel with
    the connection; none when connecting directly.
    """

    pooler: str
    server_settings: dict[str, str]  # start-up parameters
    statement_cache_size: int
    role_defaults: dict[str, str] = field(default_factory=dict)
    begin: str = "BEGIN ISOLATION LEVEL READ COMMITTED"

    def connect_args(self, *, timeout: float) -> dict[str, Any]:
        """asyncpg's connect arguments (the request path's pool, and Alembic's engine)."""
        return {
            "timeout": timeout,
            # Longer than the request deadline (timeout + 1 s), which is then what fires first.
            "command_timeout": timeout + 2,
            "server_settings": self.server_settings,
            "statement_cache_size": self.statement_cache_size,
        }


def connection_mode(settings: Settings) -> ConnectionMode:
    """DB_POOLER's mode. Straight to PostgreSQL, every bound and the isolation level are start-up
    parameters, so they hold for single statements (autocommit) as well as transactions, at no
    round trip."""
    bounds = session_bounds(settings)
    if settings.db_pooler == "pgbouncer":
        # PgBouncer in transaction mode refuses these as start-up parameters (and with
        # ignore_startup_parameters silently drops them), so they are the role's defaults,
        # which every server connection it opens starts with. It hands each transaction to
        # any server connection: a named prepared statement (asyncpg's statement cache) would
        # meet another client's, and return that one's results. With the cache off asyncpg
        # re-parses its unnamed statement in the same round trip as each execution.
        #
        # A server connection PgBouncer opened before `migrate` wrote the role's defaults keeps
        # running without them (up to server_lifetime), so each BEGIN also sets the timeouts
        # for its own transaction, in the same simple query: one round trip, as a bare BEGIN
        # (README, "Behind PgBouncer", has the figures). Single statements have no transaction
        # to carry them: they rely on the defaults, hence the RECONNECT after `migrate`.
        timeouts = "; ".join(
            f"SET LOCAL {name} = {value}" for name, value in bounds.items() if name in TIMEOUTS
        )
        return ConnectionMode(
            pooler="pgbouncer",
            server_settings={"application_name": APPLICATION_NAME},
            statement_cache_size=0,
            role_defaults=bounds,
            begin=f"BEGIN ISOLATION LEVEL READ COMMITTED; {timeouts}",
        )
    return ConnectionMode(
        pooler="none",
        server_settings={"application_name": APPLICATION_NAME, **bounds},
        statement_cache_size=100,  # asyncpg's default: statements are prepared once per connection
    )


def asyncpg_dsn(url: str, *, host: str | None = None) -> str:
    """A plain postgresql:// DSN for asyncpg from the service's SQLAlchemy-style URL.

    `ssl=<mode>` (SQLAlchemy's spelling, which Alembic's engine passes to asyncpg as a keyword)
    becomes `sslmode=<mode>`: in a DSN asyncpg would send an unknown `ssl` to the server as a
    setting, and the connection would be refused. Several hosts become asyncpg's `?host=a:1,b:2`;
    `host` picks one of them (the DSN for that host alone).
    """
    location = parse_database_url(url)
    if not location.several and host is None:
        parsed = make_url(url).set(drivername="postgresql")
    else:
        hosts = ",".join(location.hosts) if host is None else host
        parsed = location.url.set(drivername="postgresql").update_query_dict({"host": hosts})
    if "ssl" in parsed.query:
        mode = parsed.query["ssl"]
        parsed = parsed.difference_update_query(["ssl"]).update_query_dict({"sslmode": mode})
    return parsed.render_as_string(hide_password=False)


def connector(url: str) -> Connect:
    """How new connections are opened: `asyncpg.connect`, or with several hosts a fenced search
    for the primary (partner_gateway.primary). Same signature either way: `connect(dsn, **args)`."""
    location = parse_database_url(url)
    if not location.several:
        direct: Connect = asyncpg.connect
        return direct
    return PrimaryFinder({host: asyncpg_dsn(url, host=host) for host in location.hosts}).connect


class Pool:
    """The request path's pool of asyncpg connections.

    Not asyncpg's own pool, measured (issue 21): with a no-op `reset=` its checkout and release
    cost 20-27 µs of CPU against 10-15 µs for a whole `Database.statement()` on this one (the
    same loaded 2-core machine, interleaved; asyncpg's release runs in a task of its own under
    `asyncio.shield`, two more turns of the event loop, and keeps an idle timer per release);
    with the wrapper below it, a single-statement checkout went from about 66 to 115 µs of CPU
    and its in-process rate from 4,208 to 2,290 per second. asyncpg's default reset query
    (`RESET ALL`, ...) cost 20-35 % of the authenticate transaction besides; nothing here needs
    it, since the service never changes session state.

    What asyncpg's pool does right, this one does too (each tested in tests/test_db.py):
    - a cut or a broken connection ends that connection only: its idle siblings stay, and a
      connection found closed (a server restart) is skipped at the next checkout;
    - DB_POOL_PRE_PING's ping is bounded: a connection that does not answer is ended, never
      left open to the garbage collector, and the next one is tried;
    - after `close()`, a connection released is closed, never kept.
    `release(conn, reusable=False)` ends a connection instead of returning it (`Database`
    decides with `connection_broken`); `expire_connections()` replaces every connection (idle
    ones at once, busy ones at release). `dsn` and `connect_args` go to `asyncpg.connect` as they
    are (hosts, SSL, the mode's start-up parameters and statement cache), or to `connect`, a
    stand-in with its signature.
    """

    def __init__(
        self,
        *,
        dsn: str,
        size: int,
        connect_args: dict[str, Any],
        pre_ping: bool = False,
        ping_timeout: float = 1.0,
        keep: int | None = None,
        connect: Connect | None = None,
    ) -> None:
        self.size = size
        self._keep = size if keep is None else keep  # idle connections kept; the rest are overflow
        self._dsn = dsn
        self._connect_args = connect_args
        self._connect_to = connect or asyncpg.connect
        self._pre_ping = pre_ping
        self._ping_timeout = ping_timeout
        self._slots = asyncio.Semaphore(size)
        self._idle: deque[asyncpg.Connection] = deque()
        self._born: dict[int, tuple[float, int]] = {}  # id -> (opened at, generation)
        self._generation = 0
        self._closed = False
        self.in_use = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the pool is closed")
        await self._slots.acquire()
        try:
            conn = await self._reused() or await self._connect()
        except BaseException:
            self._slots.release()
            raise
        self.in_use += 1
        return conn

    async def _reused(self) -> asyncpg.Connection | None:
        """The most recently used idle connection that is open, current and (pre-ping) answers."""
        while self._idle:
            conn = self._idle.pop()  # the most recently used: warm caches, fewer connections
            if self._current(conn) and (not self._pre_ping or await self._answers(conn)):
                return conn
            self.discard(conn)
        return None

    async def _answers(self, conn: asyncpg.Connection) -> bool:
        """DB_POOL_PRE_PING: a round trip, bounded, before a request uses the connection."""
        try:
            await conn.execute("SELECT 1", timeout=self._ping_timeout)
        except PING_FAILURES:
            return False
        except BaseException:  # the caller's deadline, mid-ping: never leave it open, unowned
            self.discard(conn)
            raise
        return True

    async def _connect(self) -> asyncpg.Connection:
        generation = self._generation
        conn: asyncpg.Connection = await self._connect_to(self._dsn, **self._connect_args)
        self._born[id(conn)] = (asyncio.get_running_loop().time(), generation)
        return conn

    def _current(self, conn: asyncpg.Connection) -> bool:
        """Open, younger than MAX_CONNECTION_AGE_SECONDS, and not expired."""
        born, generation = self._born.get(id(conn), (0.0, -1))
        age = asyncio.get_running_loop().time() - born
        return not conn.is_closed() and age < MAX_CONNECTION_AGE_SECONDS and generation == self._generation

    def release(self, conn: asyncpg.Connection, *, reusable: bool) -> None:
        """Back to the idle connections, or ended: not `reusable`, closed, expired, overflow, or
        the pool closed. A broken connection costs itself only."""
        self.in_use -= 1
        if reusable and not self._closed and len(self._idle) < self._keep and self._current(conn):
            self._idle.append(conn)
        else:
            self.discard(conn)
        self._slots.release()

    def discard(self, conn: asyncpg.Connection) -> None:
        """End a connection now (its slot is the caller's to release)."""
        self._born.pop(id(conn), None)
        conn.terminate()

    def expire(self) -> None:
        """Replace every connection open now: the idle ones at once, busy ones at release."""
        self._generation += 1
        while self._idle:
            self.discard(self._idle.pop())

    async def expire_connections(self) -> None:
        """`expire()` under asyncpg's `Pool` name."""
        self.expire()

    async def close(self, *, timeout: float) -> None:
        """Close the idle connections and refuse new checkouts; one in use is closed at release."""
        self._closed = True
        while self._idle:
            conn = self._idle.pop()
            self._born.pop(id(conn), None)
            try:
                await asyncio.wait_for(conn.close(), timeout=timeout)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()


# A connection that raised one of these is not used again. InternalClientError: asyncpg's
# protocol found itself in an impossible state, as when the server terminated the connection
# while it sat idle in the pool (its farewell arrives unasked, before the next query).
BROKEN_CONNECTION: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


# A pre-ping that raised one of these ends its connection; the next one is tried.
PING_FAILURES: tuple[type[Exception], ...] = (*BROKEN_CONNECTION, TimeoutError)


def connection_broken(exc: BaseException) -> bool:
    """Whether a connection that raised `exc` is ended rather than returned to the pool.

    The one place that decides it: anything else (a constraint, a lock timeout, a domain error
    raised mid-transaction) leaves a connection that a ROLLBACK makes clean again.
    """
    return isinstance(exc, BROKEN_CONNECTION)


class Database:
    """The two ways a request uses the database, both committed before the response is sent.

    `transaction()`: one transaction for several statements; an exception rolls all back.
    `statement()`: a connection in autocommit for a request whose work is a single statement,
    which is then its own transaction: no BEGIN and COMMIT round trips.

    Each wait is bounded on its own: the pool wait and the connect by DB_TIMEOUT_SECONDS, each
    statement and each lock wait by the server's timeouts. The deadline bounds their sum, so a
    request never waits on the database much longer than DB_TIMEOUT_SECONDS.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        mode: ConnectionMode,
        timeout: float,
        observe: StatementObserver | None = None,
        reserve: Pool | None = None,
    ) -> None:
        self.pool = pool
        self.reserve = reserve or pool
        self.mode = mode
        self._timeout = timeout
        self._deadline = timeout + DEADLINE_GRACE_SECONDS
        self._observe = observe

    def observe(self, observer: StatementObserver) -> None:
        self._observe = observer

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        return self._bounded(self.pool, transaction=True)

    def statement(self) -> AbstractAsyncContextManager[Connection]:
        return self._bounded(self.pool, transaction=False)

    def reserved(self) -> AbstractAsyncContextManager[Connection]:
        """`statement()` on the connection reserved for the readiness probe, outside the pool that
        traffic uses: a replica whose pool is saturated is busy, not unready, and its probe
        answers at once instead of queueing behind the requests."""
        return self._bounded(self.reserve, transaction=False)

    @asynccontextmanager
    async def _bounded(self, pool: Pool, *, transaction: bool) -> AsyncIterator[Connection]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        try:
            async with asyncio.timeout(self._timeout):
                raw = await pool.acquire()
        except Exception as exc:  # no host would take a connection, or none is writable
            self._after_server_lost(exc)
            raise
        # Past the deadline the connection is cut, not cancelled: the statement in flight fails
        # at once as a disconnect (a 503), and the server rolls back the transaction of a
        # connection that went away. A cancel would wait on a server that stopped answering.
        # The cut ends this connection only; the server may run the statement on until its own
        # timeout notices (README, "Several replicas": count cut backends).
        cut = loop.call_at(deadline, pool.discard, raw)
        reusable = False
        try:
            if transaction:
                await raw.execute(self.mode.begin)
            yield Connection(raw, self._observe)
            if transaction:
                await raw.execute("COMMIT")
            reusable = True
        except Exception as exc:
            # A connection closed by our own deadline cut says nothing about the server (a slow
            # statement, a long lock wait): it ends that connection only, and the warm ones stay.
            if loop.time() < deadline:
                self._after_server_lost(exc)
            reusable = not connection_broken(exc) and await self._rolled_back(raw)
            raise
        finally:
            cut.cancel()
            pool.release(raw, reusable=reusable)

    def _after_server_lost(self, exc: BaseException) -> None:
        """The server stopped being a writable primary (errors.server_lost): none of the pool's
        connections to it is used again, and the next ones find the primary anew."""
        if server_lost(exc):
            self.pool.expire()
            self.reserve.expire()
            reason = _reason(exc)
            DB_SERVER_LOST.labels(reason).inc()
            logger.warning("database.server_lost", reason=reason, action="every pooled connection dropped")

    async def _rolled_back(self, raw: asyncpg.Connection) -> bool:
        """After an error: True when the connection is clean again (its transaction rolled back)."""
        if raw.is_closed():
            return False
        if not raw.is_in_transaction():
            return True
        try:
            await raw.execute("ROLLBACK")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    async def close(self) -> None:
        """After requests in flight (each ends by its deadline), every connection is closed."""
        timeout = self._deadline + DEADLINE_GRACE_SECONDS
        await asyncio.gather(self.pool.close(timeout=timeout), self.reserve.close(timeout=timeout))


def create_database(settings: Settings, url: str, *, mode: ConnectionMode | None = None) -> Database:
    """The request path's database, every wait bounded by DB_TIMEOUT_SECONDS (nothing connects yet)."""
    timeout = settings.db_timeout_seconds
    mode = mode or connection_mode(settings)

    def pool(size: int, keep: int) -> Pool:
        return Pool(
            dsn=asyncpg_dsn(url),
            connect_args=mode.connect_args(timeout=timeout),
            size=size,
            keep=keep,
            pre_ping=settings.db_pool_pre_ping,
            ping_timeout=min(PING_TIMEOUT_SECONDS, timeout / 8),
            connect=connector(url),
        )

    # DB_MAX_OVERFLOW connections are closed once returned. The readiness probe has one
    # connection of its own (opened at the first probe): one more per process for PostgreSQL.
    traffic = pool(settings.db_pool_size + settings.db_max_overflow, keep=settings.db_pool_size)
    return Database(traffic, mode=mode, timeout=timeout, reserve=pool(1, keep=1))


def _reason(exc: BaseException) -> str:
    return getattr(exc, "sqlstate", None) or type(exc).__name__


# What a database that is down, unreachable, refusing or failing raises through SQLAlchemy
# (migrations) or asyncpg: what the long-running `purge --every` survives and what the CLI
# reports in one line.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def describe_failure(exc: BaseException, url: str) -> str:
    """One line for an operator: where the database is and what went wrong, never the password."""
    location = parse_database_url(url)
    where = ",".join(location.hosts)
    if not location.several:
        single = make_url(url)
        where = f"{single.host or single.query.get('host') or 'localhost'}:{single.port or 5432}"
    cause: BaseException = exc
    while type(cause).__module__.startswith("sqlalchemy"):  # its wrappers quote SQL and links
        nested = cause.orig if isinstance(cause, DBAPIError) else cause.__cause__
        if nested is None:
            break
        cause = nested
    message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    password = location.url.password
    if password and password in message:
        # Masking a short password in place would spell it out letter by letter around the
        # stars ("***arameter"); a long one is masked, a short one costs the message.
        message = message.replace(password, "***") if len(password) >= 8 else "(detail withheld)"
    return f"database at {where}: {type(cause).__name__}: {message}"


async def database_of(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


DatabaseDep = Annotated[Database, Depends(database_of)]

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
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager, nullcontext
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
        # re-parses its unnamed statement in the same round trip as each execution. Each
        # BEGIN still names READ COMMITTED.
        return ConnectionMode(
            pooler="pgbouncer",
            server_settings={"application_name": APPLICATION_NAME},
            statement_cache_size=0,
            role_defaults=bounds,
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
    """A minimal pool of asyncpg connections.

    asyncpg's own pool sends a reset query (`RESET ALL`, `UNLISTEN *`, ...) on every release,
    which cost 20-35 % of the authenticate transaction's throughput. Nothing here needs it: no
    session state is ever changed, and `Database` returns a connection only after COMMIT or
    ROLLBACK answered; anything else (a cut, a cancel, a broken connection) is discarded.
    """

    def __init__(
        self,
        *,
        dsn: str,
        size: int,
        connect_timeout: float,
        mode: ConnectionMode,
        pre_ping: bool = False,
        keep: int | None = None,
        connect: Connect = asyncpg.connect,
    ) -> None:
        self._pre_ping = pre_ping
        self._connect_to = connect
        self._keep = size if keep is None else keep  # idle connections kept; the rest are overflow
        self.size = size
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._mode = mode
        self._slots = asyncio.Semaphore(size)
        self._idle: deque[tuple[asyncpg.Connection, float]] = deque()
        self._born: dict[int, float] = {}
        # expire() starts a new generation: connections of an older one are closed, not reused.
        self._generation = 0
        self._generations: dict[int, int] = {}
        self.in_use = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> asyncpg.Connection:
        await self._slots.acquire()
        try:
            conn = await self._pinged(self._reuse()) or await self._connect()
        except BaseException:
            self._slots.release()
            raise
        self.in_use += 1
        return conn

    def _reuse(self) -> asyncpg.Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn, born = self._idle.pop()  # the most recently used: warm caches, fewer connections
            if not conn.is_closed() and now - born < MAX_CONNECTION_AGE_SECONDS and self._current(conn):
                return conn
            self._discard(conn)
        return None

    async def _pinged(self, conn: asyncpg.Connection | None) -> asyncpg.Connection | None:
        """DB_POOL_PRE_PING: a round trip proves a reused connection alive before a request uses it."""
        if conn is None or not self._pre_ping:
            return conn
        try:
            await conn.execute("SELECT 1")
        except BROKEN_CONNECTION:
            self._discard(conn)
            self._discard_idle()
            return None
        return conn

    async def _connect(self) -> asyncpg.Connection:
        generation = self._generation
        conn: asyncpg.Connection = await self._connect_to(
            self._dsn, **self._mode.connect_args(timeout=self._connect_timeout)
        )
        self._born[id(conn)] = asyncio.get_running_loop().time()
        self._generations[id(conn)] = generation  # opened before an expire(): already old
        return conn

    def _current(self, conn: asyncpg.Connection) -> bool:
        return self._generations.get(id(conn)) == self._generation

    def expire(self) -> None:
        """Every connection open now is closed instead of reused: the idle ones at once, the
        ones in use when they come back (asyncpg's `Pool.expire_connections()`)."""
        self._generation += 1
        self._discard_idle()

    def release(self, conn: asyncpg.Connection, *, reusable: bool) -> None:
        self.in_use -= 1
        if conn.is_closed():
            # It broke under a request (the server restarted, or terminated it): its idle
            # siblings most likely did too, and would each fail a request before being noticed.
            self._born.pop(id(conn), None)
            self._generations.pop(id(conn), None)
            self._discard_idle()
        elif reusable and len(self._idle) < self._keep and self._current(conn):
            self._idle.append((conn, self._born.get(id(conn), 0.0)))
        else:
            self._discard(conn)
        self._slots.release()

    def _discard_idle(self) -> None:
        while self._idle:
            self._discard(self._idle.pop()[0])

    def _discard(self, conn: asyncpg.Connection) -> None:
        self._born.pop(id(conn), None)
        self._generations.pop(id(conn), None)
        conn.terminate()

    async def close(self) -> None:
        while self._idle:
            conn, _ = self._idle.pop()
            self._born.pop(id(conn), None)
            self._generations.pop(id(conn), None)
            try:
                await asyncio.wait_for(conn.close(), timeout=self._connect_timeout)
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
        self, pool: Pool, *, mode: ConnectionMode, timeout: float, observe: StatementObserver | None = None
    ) -> None:
        self.pool = pool
        self.mode = mode
        self._timeout = timeout
        self._deadline = timeout + DEADLINE_GRACE_SECONDS
        self._observe = observe

    def observe(self, observer: StatementObserver) -> None:
        self._observe = observer

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        return self._bounded(transaction=True)

    def statement(self) -> AbstractAsyncContextManager[Connection]:
        return self._bounded(transaction=False)

    @asynccontextmanager
    async def _bounded(self, *, transaction: bool) -> AsyncIterator[Connection]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self.pool.acquire()
        except Exception as exc:  # no host would take a connection, or none is writable
            self._after_server_lost(exc)
            raise
        # Past the deadline the connection is cut, not cancelled: the statement in flight fails
        # at once as a disconnect (a 503), and the server rolls back the transaction of a
        # connection that went away. A cancel would wait on a server that stopped answering.
        cut = loop.call_at(deadline, raw.terminate)
        reusable = False
        try:
            if transaction:
                await raw.execute(self.mode.begin)
            yield Connection(raw, self._observe)
            if transaction:
                await raw.execute("COMMIT")
            reusable = True
        except BROKEN_CONNECTION as exc:
            raw.terminate()  # unusable, whatever state asyncpg thinks it is in
            self._after_server_lost(exc)
            raise
        except Exception as exc:
            self._after_server_lost(exc)
            reusable = await self._rolled_back(raw)
            raise
        finally:
            cut.cancel()
            self.pool.release(raw, reusable=reusable)

    def _after_server_lost(self, exc: BaseException) -> None:
        """The server stopped being a writable primary (errors.server_lost): none of the pool's
        connections to it is used again, and the next ones find the primary anew."""
        if server_lost(exc):
            self.pool.expire()
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
        await self.pool.close()


def create_database(settings: Settings, url: str, *, mode: ConnectionMode | None = None) -> Database:
    """The request path's database, every wait bounded by DB_TIMEOUT_SECONDS (nothing connects yet)."""
    timeout = settings.db_timeout_seconds
    mode = mode or connection_mode(settings)
    pool = Pool(
        dsn=asyncpg_dsn(url),
        size=settings.db_pool_size + settings.db_max_overflow,
        keep=settings.db_pool_size,  # DB_MAX_OVERFLOW connections are closed once returned
        connect_timeout=timeout,
        mode=mode,
        pre_ping=settings.db_pool_pre_ping,
        connect=connector(url),
    )
    return Database(pool, mode=mode, timeout=timeout)


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

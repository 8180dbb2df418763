"""The service behind a real PgBouncer (deploy/pgbouncer/pgbouncer.ini) in transaction mode.

One PgBouncer, run by the suite as a non-root user, with a server pool (POOL) smaller than
its clients (two `serve` processes with DB_POOLER=pgbouncer, SERVICE_POOL connections each),
in front of the suite's embedded PostgreSQL; the database and its owning role are this
module's own. Every wait is bounded; each test prints its duration to stderr.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from partner_gateway.db import Statement, asyncpg_dsn, connection_mode, create_database
from tests.conftest import GATEWAY_HEADERS, make_settings
from tests.deploy.conftest import note, timed
from tests.deploy.pgbouncer import PgBouncer
from tests.helpers import auth_body, auth_headers, launch
from tests.processes import free_port, serve, wait_ready
from tests.system import require_programs

pytestmark = pytest.mark.slow

TIMEOUT = 2  # DB_TIMEOUT_SECONDS of every service here
POOL = 4  # PgBouncer's server connections to PostgreSQL
SERVICE_POOL = 6  # each service process's connections to PgBouncer: 2 x 6 clients on 4 servers
ROLE, DATABASE = "gateway", "gateway_pgbouncer"
PASSWORD = "pgbouncer-test-" + uuid.uuid4().hex
ADMIN, ADMIN_PASSWORD = "pgbouncer_admin", "pgbouncer-admin-" + uuid.uuid4().hex  # the console's
BOUNDS = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
BOUNDED = {"lock_timeout": f"{TIMEOUT}s", "statement_timeout": f"{TIMEOUT}s"} | {
    "idle_in_transaction_session_timeout": f"{TIMEOUT * 4}s"
}
TABLES = ("idempotency_keys", "user_sessions", "player_block_events", "players")
AUTH = "/betlink/authenticate"
QUERIES = 300  # per process in the mix-up check


@dataclass(frozen=True)
class Setup:
    bouncer: PgBouncer
    url: str  # the service's DATABASE_URL: PgBouncer on loopback, the module's role
    direct_url: str  # the module's database, straight to PostgreSQL as its superuser


async def _create_owner(server: dict[str, Any]) -> str:
    """A fresh role owning a fresh database; returns the role's SCRAM secret for the userlist."""
    conn = await asyncpg.connect(**server, database="postgres")
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        await conn.execute("SET password_encryption = 'scram-sha-256'")
        await conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        await conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        secret: str = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", ROLE)
        return secret
    finally:
        await conn.close()


async def _drop_owner(server: dict[str, Any]) -> None:
    conn = await asyncpg.connect(**server, database="postgres")
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
    finally:
        await conn.close()


_UNBOUNDED = dict.fromkeys(BOUNDS, "0")


async def _server_connections(port: int) -> list[dict[str, str]]:
    """The settings in force on each of PgBouncer's POOL server connections, as a single statement
    (no BEGIN of the service's) sees them: POOL clients at once, each inside a transaction, so
    each holds a server connection of its own."""
    clients = [
        await asyncpg.connect(
            host="127.0.0.1",
            port=port,
            user=ROLE,
            password=PASSWORD,
            database="gateway",
            statement_cache_size=0,
        )
        for _ in range(POOL)
    ]
    try:
        for client in clients:
            await client.execute("BEGIN")
        seen = [
            dict(await client.fetchrow("SELECT pg_backend_pid() AS pid, " + _settings_sql()) or {})
            for client in clients
        ]
        for client in clients:
            await client.execute("COMMIT")
    finally:
        for client in clients:
            await client.close()
    assert len({row.pop("pid") for row in seen}) == POOL  # POOL distinct server connections
    return [{name: str(value) for name, value in row.items()} for row in seen]


def _settings_sql() -> str:
    return ", ".join(f"current_setting('{name}') AS {name}" for name in BOUNDS)


async def _reconnect(port: int) -> None:
    """`RECONNECT gateway` on PgBouncer's admin console: each server connection is closed once
    released, and the next ones start with the role's defaults."""
    console = await asyncpg.connect(
        host="127.0.0.1",
        port=port,
        user=ADMIN,
        password=ADMIN_PASSWORD,
        database="pgbouncer",
        statement_cache_size=0,
    )
    try:
        await console.execute("RECONNECT gateway")
    finally:
        await console.close()


def _environment(url: str, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DB_POOLER": "pgbouncer",
        "DB_TIMEOUT_SECONDS": str(TIMEOUT),
        "GATEWAY_API_KEYS": "k",
        "BETLINK_API_KEYS": "k",
        "BETLINK_OPERATOR_ID": "o",
        "BETLINK_REDIRECT_URL": "https://x/",
        "DATA_ENCRYPTION_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        **settings,
    }


@pytest.fixture(scope="module")
def setup(database_url: str) -> Iterator[Setup]:
    """PgBouncer on the reference ini, and the module's database migrated through it."""
    require_programs({"pgbouncer": "pgbouncer"})
    url = make_url(database_url)
    socket_dir = str(url.query.get("host") or url.host)
    port = url.port or 5432
    server = {"host": socket_dir, "port": port, "user": url.username, "password": url.password}
    with timed("pgbouncer: set-up: role, database, PgBouncer, migrate through it"):
        secret = asyncio.run(_create_owner(server))
        bouncer = PgBouncer.configure(
            server_host=socket_dir,
            server_port=port,
            database=DATABASE,
            userlist=f'"{ROLE}" "{secret}"\n"{ADMIN}" "{ADMIN_PASSWORD}"\n',
            port=free_port(),
            pool_size=POOL,
            admin=ADMIN,
        )
        bouncer.start()
        service_url = f"postgresql+asyncpg://{ROLE}:{PASSWORD}@127.0.0.1:{bouncer.port}/gateway"
        # Every server connection opened, as on a PgBouncer that served before the first migrate:
        # none of them carries the role's timeouts, which `migrate` writes next.
        assert asyncio.run(_server_connections(bouncer.port)) == [_UNBOUNDED] * POOL
        migrate = subprocess.run(
            [sys.executable, "-m", "partner_gateway", "migrate"],
            env=_environment(service_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrate.returncode == 0, migrate.stderr + bouncer.log_tail()
        asyncio.run(_reconnect(bouncer.port))  # the README's procedure after migrate
    direct = url.set(database=DATABASE).render_as_string(hide_password=False)
    try:
        yield Setup(bouncer=bouncer, url=service_url, direct_url=direct)
    finally:
        bouncer.stop()
        shutil.rmtree(bouncer.directory, ignore_errors=True)
        asyncio.run(_drop_owner(server))


@pytest.fixture(scope="module")
def services(setup: Setup) -> Iterator[list[str]]:
    """Two `partner-gateway serve` processes with DB_POOLER=pgbouncer, both through PgBouncer."""
    ports = [free_port(), free_port()]
    settings = {
        "DB_POOLER": "pgbouncer",
        "DB_POOL_SIZE": str(SERVICE_POOL),
        "DB_TIMEOUT_SECONDS": str(TIMEOUT),
        "BETLINK_LAUNCH_TOKEN_TTL_SECONDS": "120",
        "LOG_LEVEL": "ERROR",  # the restart test makes a hundred expected warnings
    }
    with timed("pgbouncer: two serve processes ready"):
        procs = [serve(setup.url, port, workers=1, **settings) for port in ports]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        try:
            for url, proc in zip(urls, procs, strict=True):
                wait_ready(url, proc, timeout=60)
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
    try:
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


@pytest.fixture
async def direct(setup: Setup) -> AsyncIterator[AsyncEngine]:
    """The module's database, straight to PostgreSQL: counts, held locks, clean tables."""
    engine = create_async_engine(setup.direct_url)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
    yield engine
    await engine.dispose()


@pytest.fixture
async def clients(services: list[str], direct: AsyncEngine) -> AsyncIterator[list[httpx.AsyncClient]]:
    limits = httpx.Limits(max_connections=100)
    async with (
        httpx.AsyncClient(base_url=services[0], timeout=30, limits=limits) as first,
        httpx.AsyncClient(base_url=services[1], timeout=30, limits=limits) as second,
    ):
        yield [first, second]


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TestBoundsOnEveryServerConnection:
    async def test_after_migrate_and_reconnect_every_server_connection_has_the_timeouts(
        self, setup: Setup
    ) -> None:
        # The set-up warmed all POOL server connections before `migrate`, then ran RECONNECT.
        assert await _server_connections(setup.bouncer.port) == [BOUNDED] * POOL

    async def test_transactions_are_bounded_even_on_server_connections_older_than_the_defaults(
        self, setup: Setup
    ) -> None:
        direct = await asyncpg.connect(asyncpg_dsn(setup.direct_url))
        settings = make_settings(setup.url, db_pooler="pgbouncer", db_timeout_seconds=TIMEOUT)
        database = create_database(settings, setup.url)
        query = Statement("bounds", "SELECT pg_sleep(0.05), " + _settings_sql())
        role = f"ALTER ROLE {ROLE} IN DATABASE {DATABASE}"
        try:
            # Server connections opened while the role had no defaults, then the defaults back:
            # as after a first `migrate` without the RECONNECT.
            await direct.execute(f"{role} RESET ALL")
            await _reconnect(setup.bouncer.port)
            assert await _server_connections(setup.bouncer.port) == [_UNBOUNDED] * POOL
            for name, value in connection_mode(settings).role_defaults.items():
                await direct.execute(f"{role} SET {name} = '{value}'")

            async def bounds() -> dict[str, str]:
                async with database.transaction() as conn:
                    row = await conn.fetchrow(query)
                assert row is not None
                return {name: row[name] for name in BOUNDS}

            seen = await asyncio.gather(*(bounds() for _ in range(POOL * 2)))  # every server connection
        finally:
            await database.close()
            await _reconnect(setup.bouncer.port)
            await direct.close()
        assert seen == [BOUNDED] * (POOL * 2)
        assert await _server_connections(setup.bouncer.port) == [BOUNDED] * POOL


class TestBounds:
    async def test_every_bound_is_in_force_in_transactions_and_single_statements(self, setup: Setup) -> None:
        settings = make_settings(setup.url, db_pooler="pgbouncer", db_timeout_seconds=TIMEOUT)
        database = create_database(settings, setup.url)
        query = Statement(
            "bounds",
            "SELECT current_setting('lock_timeout') AS lock, current_setting('statement_timeout') AS stmt, "
            "current_setting('idle_in_transaction_session_timeout') AS idle, "
            "current_setting('transaction_isolation') AS isolation",
        )
        try:
            seen = []
            for _ in range(POOL * 2):  # over several server connections
                for opened in (database.transaction(), database.statement()):
                    async with opened as conn:
                        seen.append(tuple(await conn.fetchrow(query) or ()))
        finally:
            await database.close()
        assert set(seen) == {(f"{TIMEOUT}s", f"{TIMEOUT}s", f"{TIMEOUT * 4}s", "read committed")}

    async def test_the_direct_mode_is_refused_rather_than_silently_unbounded(self, setup: Setup) -> None:
        settings = make_settings(setup.url, db_pooler="none", db_timeout_seconds=TIMEOUT)
        database = create_database(settings, setup.url)
        try:
            with pytest.raises(Exception, match="unsupported startup parameter"):
                async with database.statement() as conn:
                    await conn.execute(Statement("one", "SELECT 1"))
        finally:
            await database.close()

    async def test_a_held_lock_gives_503_within_the_timeout_and_frees_the_server(
        self, clients: list[httpx.AsyncClient], direct: AsyncEngine
    ) -> None:
        session = await launch(clients[0])
        async with direct.connect() as holder:
            await holder.execute(
                text("SELECT id FROM user_sessions WHERE launch_token_hash = :h FOR UPDATE"),
                {"h": _digest(session["launchToken"])},
            )
            started = time.monotonic()
            response = await clients[1].post(AUTH, headers=auth_headers(), json=auth_body(session))
            elapsed = time.monotonic() - started
            # The server's lock_timeout fired (not only the service's cut): nothing still waits.
            waiting = await _scalar(
                direct, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            )
            await holder.rollback()
        note(f"pgbouncer: held lock answered in {elapsed:.2f} s")
        assert response.status_code == 503
        assert response.json()["errorCode"] == "REQUEST_TIMED_OUT"
        assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 1
        assert waiting == 0


class TestRaces:
    async def test_same_key_storm_over_two_processes_gives_one_token_and_identical_bodies(
        self, clients: list[httpx.AsyncClient], direct: AsyncEngine
    ) -> None:
        session = await launch(clients[0])
        key, body = str(uuid.uuid4()), auth_body(session)
        with timed("pgbouncer: 60 same-key requests over two processes"):
            responses = await asyncio.gather(
                *(clients[i % 2].post(AUTH, headers=auth_headers(key), json=body) for i in range(60))
            )
        assert Counter(r.status_code for r in responses) == {200: 60}
        assert len({r.content for r in responses}) == 1
        sql = "SELECT count(*) FROM user_sessions WHERE session_token_hash IS NOT NULL"
        assert await _scalar(direct, sql) == 1

    async def test_many_keys_on_one_launch_token_give_exactly_one_200(
        self, clients: list[httpx.AsyncClient], direct: AsyncEngine
    ) -> None:
        session = await launch(clients[1])
        with timed("pgbouncer: 40 keys on one launch token"):
            responses = await asyncio.gather(
                *(
                    clients[i % 2].post(AUTH, headers=auth_headers(), json=auth_body(session))
                    for i in range(40)
                )
            )
        assert Counter(r.status_code for r in responses) == {200: 1, 401: 39}
        assert {r.json()["errorCode"] for r in responses if r.status_code == 401} == {"INVALID_SESSION"}
        assert await _scalar(direct, "SELECT count(*) FROM idempotency_keys") == 1

    async def test_block_racing_authenticate_leaves_no_live_token(
        self, clients: list[httpx.AsyncClient]
    ) -> None:
        player = {**GATEWAY_HEADERS, "X-User-Id": "racer"}
        with timed("pgbouncer: block racing authenticate, 3 rounds"):
            for _round in range(3):
                assert (
                    await clients[0].delete("/players/racer/block", headers=GATEWAY_HEADERS)
                ).status_code == 204
                sessions = [await launch(clients[i % 2], "racer") for i in range(8)]
                results = await asyncio.gather(
                    *(clients[0].post(AUTH, headers=auth_headers(), json=auth_body(s)) for s in sessions[:4]),
                    clients[1].put("/players/racer/block", headers=GATEWAY_HEADERS),
                    *(clients[1].post(AUTH, headers=auth_headers(), json=auth_body(s)) for s in sessions[4:]),
                )
                assert {r.status_code for r in results} <= {200, 204, 400, 401}, [r.text for r in results]
                for response in results:
                    token = (
                        response.json().get("operatorSessionToken") if response.status_code == 200 else None
                    )
                    if token:
                        check = await clients[0].post(
                            "/betlink/sessions/introspect",
                            headers=player,
                            json={"operatorSessionToken": token},
                        )
                        assert check.json() == {"active": False}


class TestNoMixUp:
    def _run(self, setup: Setup, *extra: str) -> list[dict[str, int]]:
        command = [sys.executable, "-m", "tests.deploy.query_worker", setup.url]
        procs = [
            subprocess.Popen([*command, tag, str(QUERIES), *extra], stdout=subprocess.PIPE, text=True)
            for tag in "AB"
        ]
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0]
        return [json.loads(output) for output in outputs]

    def test_two_processes_never_receive_each_others_results(self, setup: Setup) -> None:
        with timed("pgbouncer: mix-up check, DB_POOLER=pgbouncer"):
            outcomes = self._run(setup)
        assert outcomes == [{"own": QUERIES, "foreign": 0, "errors": 0}] * 2

    def test_the_check_sees_the_mix_up_with_the_statement_cache_on(self, setup: Setup) -> None:
        # Which statement meets which server connection is up to timing: most runs see foreign
        # answers, an unlucky one sees only errors (`prepared statement ... already exists`).
        for attempt in range(3):
            with timed(f"pgbouncer: mix-up check, statement cache on, attempt {attempt + 1}"):
                outcomes = self._run(setup, "--statement-cache", "100")
            note(f"pgbouncer: statement cache on: {outcomes}")
            if sum(o["foreign"] for o in outcomes) > 0:
                return
        pytest.fail(f"no foreign answer in 3 runs with the statement cache on: {outcomes}")


class TestPgBouncerDown:
    async def test_readyz_is_503_while_pgbouncer_is_down_and_200_again_after(
        self, setup: Setup, clients: list[httpx.AsyncClient]
    ) -> None:
        for client in clients:
            assert (await client.get("/readyz")).status_code == 200
        setup.bouncer.stop()
        try:
            for client in clients:
                started = time.monotonic()
                response = await client.get("/readyz")
                assert response.status_code == 503
                assert response.headers["content-type"] == "application/problem+json"
                assert time.monotonic() - started < TIMEOUT + 1
        finally:
            setup.bouncer.start()
        for client in clients:
            assert (await _eventually_ready(client)) == 200

    async def test_a_restart_mid_load_gives_only_retryable_503s_and_loses_nothing(
        self, setup: Setup, clients: list[httpx.AsyncClient], direct: AsyncEngine
    ) -> None:
        outcomes: list[tuple[str, httpx.Response, dict[str, Any] | None]] = []
        stop = asyncio.Event()

        async def player(n: int) -> None:
            issuer, exchanger = clients[n % 2], clients[(n + 1) % 2]
            while not stop.is_set():
                issued = await issuer.post(
                    "/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": f"p{n}"}
                )
                outcomes.append(("session", issued, None))
                if issued.status_code != 201:
                    continue
                key, body = str(uuid.uuid4()), auth_body(issued.json())
                answer = await exchanger.post(AUTH, headers=auth_headers(key), json=body)
                outcomes.append((key, answer, body))

        with timed("pgbouncer: load with a PgBouncer restart (3.5 s of load)"):
            load = [asyncio.create_task(player(n)) for n in range(8)]
            await asyncio.sleep(1)
            setup.bouncer.stop()
            await asyncio.sleep(0.5)
            setup.bouncer.start()
            await asyncio.sleep(2)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*load), timeout=TIMEOUT + 10)

        statuses = Counter(r.status_code for _, r, _ in outcomes)
        note(f"pgbouncer: statuses under restart: {dict(statuses)}")
        assert set(statuses) <= {200, 201, 503}
        assert statuses[503] > 0  # the restart did hit requests in flight
        for what, response, _ in outcomes:
            if response.status_code == 503 and what != "session":
                assert response.json()["errorCode"] == "REQUEST_TIMED_OUT"
            elif response.status_code == 503:
                assert response.headers["content-type"] == "application/problem+json"

        # Recovery without a restart: the failed exchanges, retried with their keys, succeed
        # (or replay the answer that committed just before the cut), and every key has one token.
        bodies = {key: r.content for key, r, _ in outcomes if key != "session" and r.status_code == 200}
        for key, response, body in outcomes:
            if key != "session" and response.status_code == 503:
                retried = await clients[0].post(AUTH, headers=auth_headers(key), json=body)
                assert retried.status_code == 200, retried.text
                bodies[key] = retried.content
        for key, content in bodies.items():
            replay = await clients[1].post(AUTH, headers=auth_headers(key), json=_body_of(outcomes, key))
            assert replay.content == content
        tokens = [json.loads(content)["operatorSessionToken"] for content in bodies.values()]
        assert len(set(tokens)) == len(tokens)
        assert await _scalar(
            direct, "SELECT count(*) FROM idempotency_keys WHERE response IS NOT NULL"
        ) == len(bodies)
        sql = "SELECT count(*) FROM user_sessions WHERE session_token_hash = ANY(:hashes)"
        assert await _scalar(direct, sql, hashes=[_digest(t) for t in tokens]) == len(tokens)
        sql = "SELECT count(*) FROM user_sessions WHERE session_token_hash IS NOT NULL"
        assert await _scalar(direct, sql) == len(tokens)


def _body_of(outcomes: list[tuple[str, httpx.Response, dict[str, Any] | None]], key: str) -> dict[str, Any]:
    return next(body for k, _, body in outcomes if k == key and body is not None)


async def _eventually_ready(client: httpx.AsyncClient, *, within: float = TIMEOUT + 5) -> int:
    deadline = time.monotonic() + within
    status = 0
    while time.monotonic() < deadline:
        status = (await client.get("/readyz")).status_code
        if status == 200:
            break
        await asyncio.sleep(0.1)
    return status

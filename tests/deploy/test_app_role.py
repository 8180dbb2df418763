"""deploy/postgres/app-role.psql and `migrate`: least privilege for the runtime role, for real.

Each case is a fresh database on a real server, owned by a non-superuser owner with CREATEROLE
(never a superuser), on PostgreSQL 15 (Debian's, started here) and 18 (the suite's embedded
server), with the script run before and after the first migration. The runtime role gets only
what the service does to each table (RUNTIME_PRIVILEGES), including on a table created later.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from partner_gateway.db import connection_mode, create_database, utc_now
from partner_gateway.maintenance import purge_expired
from partner_gateway.schema import ROW_PRIVILEGES, RUNTIME_PRIVILEGES, upgrade
from tests.conftest import GATEWAY_HEADERS, make_settings
from tests.deploy.conftest import note, timed
from tests.helpers import authenticate, launch
from tests.system import require_programs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "postgres" / "app-role.psql"
PG15 = Path("/usr/lib/postgresql/15/bin")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def _as_postgres() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: run its programs as Debian's `postgres` user then."""
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}


@pytest.fixture(scope="module")
def postgres15() -> Iterator[str]:
    """A throwaway PostgreSQL 15 (Debian's packages) on a unix socket; its superuser's URL."""
    require_programs({"psql": "postgresql-client-15", str(PG15 / "postgres"): "postgresql-15"})
    directory = Path(tempfile.mkdtemp(prefix="pg15-app-role-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    started = time.monotonic()
    run = {**_as_postgres(), "check": True, "capture_output": True, "timeout": 120}
    subprocess.run([PG15 / "initdb", "-D", data, "-A", "trust", "-U", "postgres"], **run)
    options = f"-k {directory} -c listen_addresses='' -c fsync=off"
    subprocess.run(
        [PG15 / "pg_ctl", "-D", data, "-o", options, "-w", "-l", directory / "log", "start"], **run
    )
    note(f"PostgreSQL 15 initdb and start: {time.monotonic() - started:.2f} s")
    try:
        yield f"postgresql+asyncpg://postgres@/postgres?host={directory}"
    finally:
        subprocess.run([PG15 / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], **run)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["15", "18"])
def superuser_url(request: pytest.FixtureRequest, database_url: str) -> str:
    if request.param == "15":
        url: str = request.getfixturevalue("postgres15")
        return url
    return database_url  # the suite's embedded server (PostgreSQL 18), as its superuser


@dataclass(frozen=True)
class Site:
    """A database owned by a non-superuser owner with CREATEROLE, and the runtime role's name."""

    superuser_url: str
    owner: str
    app: str

    def url(self, role: str) -> str:
        return make_url(self.superuser_url).set(username=role, database=self.owner).render_as_string(False)

    def run_script(self, *, password: str = "app-password") -> subprocess.CompletedProcess[str]:
        url = make_url(self.url(self.owner))
        command = ["psql", "--no-psqlrc", "-X", "-q", "-h", str(url.query["host"]), "-U", self.owner]
        command += ["-d", self.owner, "-v", f"app_role={self.app}", "-v", f"app_password={password}"]
        with timed("app-role.psql as a non-superuser owner"):
            return subprocess.run(
                [*command, "-f", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
            )

    def migrate(self) -> None:
        """`partner-gateway migrate` as the owner, with DB_POOLER=pgbouncer (role defaults)."""
        mode = connection_mode(make_settings(self.url(self.owner), db_pooler="pgbouncer"))
        with timed("migrate as a non-superuser owner"):
            upgrade(
                self.url(self.owner),
                connect_args={"statement_cache_size": mode.statement_cache_size},
                role_defaults=mode.role_defaults,
            )

    async def sql(self, role: str, *statements: str) -> list[Any]:
        """Run each statement in its own transaction as `role`; the first column of each result."""
        engine = create_async_engine(self.url(role))
        results = []
        try:
            for statement in statements:
                async with engine.begin() as conn:
                    result = await conn.execute(text(statement))
                    results.append(result.scalar() if result.returns_rows else None)
        finally:
            await engine.dispose()
        return results


async def _superuser(url: str, *statements: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def site(superuser_url: str) -> AsyncIterator[Site]:
    suffix = uuid.uuid4().hex[:8]
    site = Site(superuser_url, owner=f"owner_{suffix}", app=f"app_{suffix}")
    await _superuser(
        superuser_url,
        f"CREATE ROLE {site.owner} LOGIN CREATEROLE",
        f"CREATE DATABASE {site.owner} OWNER {site.owner}",
    )
    yield site
    await _superuser(
        superuser_url,
        f"DROP DATABASE {site.owner} WITH (FORCE)",
        f"DROP ROLE IF EXISTS {site.app}",
        f"DROP ROLE {site.owner}",
    )


def _script_ok(site: Site) -> None:
    result = site.run_script()
    assert result.returncode == 0, result.stderr


def _script_then_migrate(site: Site) -> None:
    _script_ok(site)
    site.migrate()


def _migrate_then_script(site: Site) -> None:
    site.migrate()
    _script_ok(site)


ORDERS: dict[str, Callable[[Site], None]] = {
    "script, then migrate": _script_then_migrate,
    "migrate, then script": _migrate_then_script,
}


@pytest.fixture(params=list(ORDERS))
def deployed(request: pytest.FixtureRequest, site: Site) -> Site:
    ORDERS[request.param](site)
    return site


async def _privileges(site: Site) -> dict[str, set[str]]:
    engine = create_async_engine(site.url(site.owner))
    try:
        async with engine.connect() as conn:
            tables = (
                await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
                )
            ).scalars()
            held = {}
            for table in tables:
                rows = await conn.execute(
                    text(
                        "SELECT p FROM unnest(CAST(:all AS text[])) AS p WHERE has_table_privilege(:r, :t, p)"
                    ),
                    {"all": list(TABLE_PRIVILEGES), "r": site.app, "t": f"public.{table}"},
                )
                held[table] = set(rows.scalars())
            return held
    finally:
        await engine.dispose()


async def _refused(site: Site, role: str, statement: str) -> bool:
    try:
        await site.sql(role, statement)
    except DBAPIError as exc:
        return "permission denied" in str(exc.orig)
    return False


class TestRuntimeRolePrivileges:
    async def test_each_table_gets_exactly_what_the_service_does_to_it(self, deployed: Site) -> None:
        held = await _privileges(deployed)
        assert held, "no tables: the migration did not run"
        expected = {table: set(RUNTIME_PRIVILEGES.get(table, ROW_PRIVILEGES)) for table in held}
        assert held == expected
        assert expected["player_block_events"] == {"SELECT", "INSERT"}
        assert expected["alembic_version"] == {"SELECT"}

    async def test_the_audit_trail_and_the_schema_version_cannot_be_rewritten(self, deployed: Site) -> None:
        app = deployed.app
        assert await _refused(deployed, app, "DELETE FROM player_block_events")
        assert await _refused(deployed, app, "UPDATE player_block_events SET blocked = NOT blocked")
        assert await _refused(deployed, app, "UPDATE alembic_version SET version_num = '0000'")
        assert await _refused(deployed, app, "DELETE FROM alembic_version")
        assert await _refused(deployed, app, "DELETE FROM players")
        assert await _refused(deployed, app, "TRUNCATE user_sessions")
        assert await _refused(deployed, app, "CREATE TABLE intruder (id int)")
        # What it may do, it can: the audit trail is appended to and read.
        appended = (
            "INSERT INTO player_block_events (user_id, blocked, actor, created_at)"
            " VALUES ('p', true, 'a', now())"
        )
        await deployed.sql(app, appended, "SELECT count(*) FROM player_block_events")

    async def test_a_table_created_later_works_for_the_runtime_role(self, deployed: Site) -> None:
        # What a later migration (the wallet's transactions) does: the owner creates a table.
        await deployed.sql(
            deployed.owner, "CREATE TABLE later_records (id bigint GENERATED ALWAYS AS IDENTITY, note text)"
        )
        # ...and migrate's narrowing leaves alone a table it has no exception for.
        await asyncio.to_thread(deployed.migrate)
        rows = [
            "INSERT INTO later_records (note) VALUES ('a')",
            "UPDATE later_records SET note = 'b'",
            "SELECT note FROM later_records",
            "DELETE FROM later_records",
        ]
        assert await deployed.sql(deployed.app, *rows) == [None, None, "b", None]
        assert await _refused(deployed, deployed.app, "TRUNCATE later_records")

    async def test_behind_pgbouncer_the_runtime_role_gets_the_bounds(self, deployed: Site) -> None:
        bounds = connection_mode(
            make_settings("postgresql+asyncpg://x@h/d", db_pooler="pgbouncer")
        ).role_defaults
        names = list(bounds)
        shown = await deployed.sql(deployed.app, *(f"SELECT current_setting('{name}')" for name in names))
        assert dict(zip(names, shown, strict=True)) == {
            "lock_timeout": "2s",
            "statement_timeout": "2s",
            "idle_in_transaction_session_timeout": "8s",
            "default_transaction_isolation": "read committed",
        }

    async def test_the_role_has_no_powers_and_the_script_runs_again(self, deployed: Site) -> None:
        again = deployed.run_script(password="rotated")
        assert again.returncode == 0, again.stderr
        powers = await deployed.sql(
            deployed.owner,
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication "
            f"FROM pg_roles WHERE rolname = '{deployed.app}'",
        )
        assert powers == [False]
        # Running it again granted nothing back.
        held = await _privileges(deployed)
        assert held["player_block_events"] == {"SELECT", "INSERT"}


class TestServiceAsTheRuntimeRole:
    async def test_every_route_and_purge_work_with_these_privileges(
        self, deployed: Site, make_client: Callable[..., Any]
    ) -> None:
        client: httpx.AsyncClient = await make_client(database_url=deployed.url(deployed.app))
        assert (await client.get("/readyz")).status_code == 200
        session = await launch(client, "least-privilege")
        authenticated = await authenticate(client, session)
        assert authenticated.status_code == 200, authenticated.text
        token = authenticated.json()["operatorSessionToken"]
        introspected = await client.post(
            "/betlink/sessions/introspect", json={"operatorSessionToken": token}, headers=GATEWAY_HEADERS
        )
        assert introspected.json()["active"] is True
        for method in ("PUT", "DELETE", "PUT"):
            answer = await client.request(method, "/players/least-privilege/block", headers=GATEWAY_HEADERS)
            assert answer.status_code == 204, answer.text
        settings = make_settings(deployed.url(deployed.app), idempotency_ttl_seconds=1)
        database = create_database(settings, deployed.url(deployed.app))
        try:
            await purge_expired(database, settings=settings, now=utc_now().replace(year=2100))
        finally:
            await database.close()
        assert await deployed.sql(deployed.app, "SELECT count(*) FROM user_sessions") == [0]

"""DATABASE_URL's query parameters and host lists mean the same on every path that connects
(request path, migrate, purge, Alembic)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from partner_gateway.config import WRITABLE_TARGETS, ConfigError, load_settings, parse_database_url
from partner_gateway.db import asyncpg_dsn, describe_failure
from partner_gateway.schema import upgrade
from tests.conftest import GATEWAY_HEADERS
from tests.processes import free_port


def _with_ssl(url: str, mode: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}ssl={mode}"


class TestSslParameter:
    def test_becomes_asyncpgs_sslmode_in_the_request_paths_dsn(self) -> None:
        dsn = asyncpg_dsn("postgresql+asyncpg://gw:pw@db:5432/gw?ssl=verify-full")
        assert dsn == "postgresql://gw:pw@db:5432/gw?sslmode=verify-full"

    async def test_the_service_and_migrate_both_connect_with_it(
        self, make_client: Callable[..., Any], database_url: str
    ) -> None:
        url = _with_ssl(database_url, "disable")  # the embedded server has no TLS on its socket
        await asyncio.to_thread(upgrade, url)  # Alembic runs its own event loop
        client: httpx.AsyncClient = await make_client(database_url=url)
        assert (await client.get("/readyz")).status_code == 200
        response = await client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "p1"})
        assert response.status_code == 201


PASSWORD = "secret-password"
NETLOC = f"postgresql+asyncpg://gw:{PASSWORD}@db-a:5432,db-b:5433/gw?target_session_attrs=read-write"
QUERY = f"postgresql+asyncpg://gw:{PASSWORD}@/gw?host=db-a:5432,db-b:5433&target_session_attrs=read-write"
REPEATED = (
    f"postgresql+asyncpg://gw:{PASSWORD}@/gw?host=db-a:5432&host=db-b:5433&target_session_attrs=primary"
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    return monkeypatch


class TestSeveralHosts:
    """libpq's spellings of a host list, for following the primary (target_session_attrs)."""

    @pytest.mark.parametrize("url", [NETLOC, QUERY, REPEATED], ids=["netloc", "query", "repeated"])
    def test_each_spelling_names_the_hosts_in_order(self, env: pytest.MonkeyPatch, url: str) -> None:
        env.setenv("DATABASE_URL", url)
        settings, _ = load_settings(service=False, command="migrate")
        location = parse_database_url(settings.database_url or "")
        assert location.hosts == ("db-a:5432", "db-b:5433")
        assert location.target_session_attrs in WRITABLE_TARGETS
        assert location.url.password == PASSWORD
        assert location.url.database == "gw"

    @pytest.mark.parametrize("url", [NETLOC, QUERY], ids=["netloc", "query"])
    def test_asyncpg_gets_the_list_and_each_host_alone(self, url: str) -> None:
        both = "host=db-a%3A5432%2Cdb-b%3A5433"
        assert asyncpg_dsn(url) == f"postgresql://gw:{PASSWORD}@/gw?{both}&target_session_attrs=read-write"
        alone = asyncpg_dsn(url, host="db-b:5433")
        assert alone == f"postgresql://gw:{PASSWORD}@/gw?host=db-b%3A5433&target_session_attrs=read-write"

    def test_one_host_may_ask_for_a_writable_server_too(self) -> None:
        url = "postgresql+asyncpg://gw:pw@db/gw?target_session_attrs=read-write"
        assert asyncpg_dsn(url) == "postgresql://gw:pw@db/gw?target_session_attrs=read-write"

    @pytest.mark.parametrize("target", ["standby", "prefer-standby", "read-only", "any", "bogus"])
    def test_a_target_that_may_pick_a_standby_is_refused(self, env: pytest.MonkeyPatch, target: str) -> None:
        env.setenv("DATABASE_URL", NETLOC.replace("read-write", target))
        with pytest.raises(ConfigError) as raised:
            load_settings(service=False, command="migrate")
        assert str(raised.value) == (
            f"DATABASE_URL: Value error, has target_session_attrs={target}, which may pick a standby; "
            "the service writes on every request: use target_session_attrs=read-write"
        )

    @pytest.mark.parametrize(
        ("url", "rule"),
        [
            (NETLOC.split("?")[0], "names several hosts without target_session_attrs=read-write"),
            (NETLOC.replace("db-a:5432,", "db-a:5432,,"), "has a malformed host list"),
            (NETLOC.replace("db-b:5433", "db-b:54x3"), "has a malformed host list"),
            (QUERY.replace("db-b:5433", "db b:5433"), "has a malformed host list"),
            (NETLOC.replace("db-b:5433", "db-b:99999"), "has a port outside 1-65535"),
            (NETLOC.replace("/gw?", "/gw?host=db-c:5432&"), "gives hosts twice"),
            (QUERY + "&target_session_attrs=primary", "gives target_session_attrs more than once"),
        ],
        ids=["no-target", "empty-host", "bad-port", "space", "port-range", "hosts-twice", "target-twice"],
    )
    def test_a_malformed_host_list_is_one_line_without_the_password(
        self, env: pytest.MonkeyPatch, url: str, rule: str
    ) -> None:
        env.setenv("DATABASE_URL", url)
        with pytest.raises(ConfigError) as raised:
            load_settings(service=False, command="migrate")
        line = str(raised.value)
        assert line.startswith(f"DATABASE_URL: Value error, {rule}")
        assert PASSWORD not in line
        assert "\n" not in line

    def test_a_failure_names_every_host_and_never_the_password(self) -> None:
        line = describe_failure(OSError(f"refused ({PASSWORD})"), NETLOC)
        assert line.startswith("database at db-a:5432,db-b:5433: OSError: refused (")
        assert PASSWORD not in line

    def test_migrate_reaching_no_writable_host_is_one_line(self, env: pytest.MonkeyPatch) -> None:
        closed = [free_port(), free_port()]
        url = (
            f"postgresql+asyncpg://gw:{PASSWORD}@127.0.0.1:{closed[0]},127.0.0.1:{closed[1]}/gw"
            "?target_session_attrs=read-write"
        )
        done = subprocess.run(
            [sys.executable, "-m", "partner_gateway", "migrate"],
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1
        hosts = f"127.0.0.1:{closed[0]},127.0.0.1:{closed[1]}"
        assert done.stderr.startswith(f"partner-gateway: cannot use the database: database at {hosts}: ")
        assert done.stderr.count("\n") == 1
        assert PASSWORD not in done.stderr

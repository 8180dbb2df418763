"""Local mode's embedded PostgreSQL: data kept across restarts, crashed runs do not wedge it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from partner_gateway.embedded import HANDLES_FILE, prune_dead_handles
from tests.processes import free_port


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "GATEWAY_", "BETLINK_"))}
    env.update({"DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"})
    return subprocess.Popen(
        [sys.executable, "-m", "partner_gateway", "serve", "--local", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
    )


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited early"
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def _postgres_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().splitlines()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gateway_key(data_dir: Path) -> str:
    key: str = json.loads((data_dir / "local-secrets.json").read_text())["GATEWAY_API_KEYS"]
    return key


@contextmanager
def serving(data_dir: Path, *, stop: signal.Signals = signal.SIGTERM) -> Iterator[str]:
    """`partner-gateway serve` in local mode on a free port; stopped with `stop` on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(data_dir, port)
    try:
        _wait(url, proc)
        yield url
    finally:
        proc.send_signal(stop)
        proc.wait(timeout=30)


def _issue_launch_token(url: str, data_dir: Path) -> int:
    headers = {"Authorization": f"Bearer {_gateway_key(data_dir)}", "X-User-Id": "u1"}
    return httpx.post(url + "/betlink/session", headers=headers).status_code


@pytest.mark.slow
class TestLocalServe:
    def test_restart_keeps_data_and_sigterm_stops_postgres(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        with serving(data_dir) as url:
            assert _issue_launch_token(url, data_dir) == 201
        assert not _postgres_running(data_dir / "pgdata")
        with serving(data_dir, stop=signal.SIGINT) as url:
            # The same generated key still works: the data directory was reused.
            assert _issue_launch_token(url, data_dir) == 201
        assert not _postgres_running(data_dir / "pgdata")

    def test_a_killed_run_does_not_leave_the_next_one_broken(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        with serving(data_dir, stop=signal.SIGKILL):
            pass
        with serving(data_dir) as url:
            assert _issue_launch_token(url, data_dir) == 201
        assert not _postgres_running(data_dir / "pgdata")


@pytest.mark.slow
class TestLocalModeSaysSo:
    def test_start_up_warns_with_the_absolute_data_directory_and_prints_the_keys(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        port = free_port()
        proc = _serve(Path("relative-data"), port)
        try:
            _wait(f"http://127.0.0.1:{port}", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        lines = out.decode().splitlines()
        warning = next(json.loads(line) for line in lines if "local mode is on" in line)
        assert warning["level"] == "warning"
        assert warning["data_dir"] == str(tmp_path / "relative-data")
        banner = next(line for line in lines if line.startswith("partner-gateway local mode: generated keys"))
        assert str(tmp_path / "relative-data" / "local-secrets.json") in banner


class TestPruneHandles:
    def test_forgets_dead_pids_and_keeps_live_ones(self, tmp_path: Path) -> None:
        dead = subprocess.Popen(["true"])
        dead.wait()
        (tmp_path / HANDLES_FILE).write_text(json.dumps([os.getpid(), dead.pid]))
        prune_dead_handles(tmp_path)
        assert json.loads((tmp_path / HANDLES_FILE).read_text()) == [os.getpid()]

"""Local mode's embedded PostgreSQL: data kept across restarts, crashed runs do not wedge it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from partner_gateway.embedded import HANDLES_FILE, prune_dead_handles
from tests.processes import free_port


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "GATEWAY_", "BETLINK_"))}
    env.update({"DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"})
    return subprocess.Popen(
        [sys.executable, "-m", "partner_gateway", "serve", "--port", str(port)],
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


@pytest.mark.slow
class TestLocalServe:
    def test_restart_keeps_data_and_sigterm_stops_postgres(self, tmp_path: Path) -> None:
        data_dir, port = tmp_path / "data", free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _serve(data_dir, port)
        try:
            _wait(url, proc)
            headers = {"Authorization": f"Bearer {_gateway_key(data_dir)}", "X-User-Id": "u1"}
            assert httpx.post(url + "/betlink/session", headers=headers).status_code == 201
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert not _postgres_running(data_dir / "pgdata")

        proc = _serve(data_dir, port)
        try:
            _wait(url, proc)
            # The same generated key still works: the data directory was reused.
            headers = {"Authorization": f"Bearer {_gateway_key(data_dir)}", "X-User-Id": "u1"}
            assert httpx.post(url + "/betlink/session", headers=headers).status_code == 201
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        assert not _postgres_running(data_dir / "pgdata")

    def test_a_killed_run_does_not_leave_the_next_one_broken(self, tmp_path: Path) -> None:
        data_dir, port = tmp_path / "data", free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _serve(data_dir, port)
        _wait(url, proc)
        proc.kill()
        proc.wait(timeout=10)
        proc = _serve(data_dir, port)
        try:
            _wait(url, proc)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert not _postgres_running(data_dir / "pgdata")


class TestPruneHandles:
    def test_forgets_dead_pids_and_keeps_live_ones(self, tmp_path: Path) -> None:
        dead = subprocess.Popen(["true"])
        dead.wait()
        (tmp_path / HANDLES_FILE).write_text(json.dumps([os.getpid(), dead.pid]))
        prune_dead_handles(tmp_path)
        assert json.loads((tmp_path / HANDLES_FILE).read_text()) == [os.getpid()]

"""Real `partner-gateway serve` processes for the tests that need them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

import httpx

from tests.conftest import BETLINK_KEY, ENCRYPTION_KEY, GATEWAY_KEY, OPERATOR_ID, REDIRECT_URL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_environment(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a test `serve` (or of a process built like it): the test keys, quiet logs."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "BETLINK_API_KEYS": BETLINK_KEY,
        "BETLINK_OPERATOR_ID": OPERATOR_ID,
        "BETLINK_REDIRECT_URL": REDIRECT_URL,
        "DATA_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "LOG_LEVEL": "WARNING",
        **settings,
    }


def serve(database_url: str, port: int, *, workers: int = 1, **settings: str) -> subprocess.Popen[bytes]:
    """Start `partner-gateway serve` on `port` against `database_url` with the test keys."""
    command = ["serve", "--port", str(port), "--workers", str(workers)]
    env = service_environment(database_url, **settings)
    return subprocess.Popen([sys.executable, "-m", "partner_gateway", *command], env=env)


def bidpaw_sandbox(
    port: int, *, client_id: str, secret_key: str, restricted_countries: str = ""
) -> subprocess.Popen[bytes]:
    """Start `partner-gateway bidpaw-sandbox` on `port`; `wait_listening` for it."""
    env = {
        **os.environ,
        "BIDPAW_CLIENT_ID": client_id,
        "BIDPAW_SECRET_KEY": secret_key,
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "partner_gateway", "bidpaw-sandbox", "--port", str(port)]
    if restricted_countries:
        command += ["--restricted-countries", restricted_countries]
    return subprocess.Popen(command, env=env)


def wallet_sandbox(
    port: int, *args: str, secrets: str, stdout: IO[bytes] | None = None, **settings: str
) -> subprocess.Popen[bytes]:
    """Start `partner-gateway wallet-sandbox --port port *args` with `WALLET_SECRET=secrets`."""
    env = {**os.environ, "WALLET_SECRET": secrets, "LOG_LEVEL": "WARNING", **settings}
    command = [sys.executable, "-m", "partner_gateway", "wallet-sandbox", "--port", str(port), *args]
    return subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.STDOUT if stdout else None)


def wait_listening(url: str, proc: subprocess.Popen[bytes], *, timeout: float = 60) -> None:
    """Until `url` answers at all (a process without /readyz, such as the sandbox)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited early with {proc.returncode}")
        try:
            httpx.get(url)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not start")


def wait_ready(url: str, proc: subprocess.Popen[bytes], *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready")


@contextmanager
def served(database_url: str, *, workers: int = 1, **settings: str) -> Iterator[str]:
    """A real `partner-gateway serve` on a free port, ready; its base URL. Stopped on exit."""
    port = free_port()
    proc = serve(database_url, port, workers=workers, **settings)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def timed_with(note: Callable[[str], None], what: str) -> Iterator[None]:
    """Time the block and hand `<what>: <seconds> s` to `note` (a real-process test's timing line)."""
    started = time.monotonic()
    try:
        yield
    finally:
        note(f"{what}: {time.monotonic() - started:.2f} s")

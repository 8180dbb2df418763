"""Starting what the load generator talks to: the service, the trivial app, the BidPaw sandbox."""

from __future__ import annotations

import base64
import functools
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gwbench.procs import Server, free_port

SERVE_SCRIPT = Path(__file__).resolve().parent / "serve.py"
OPERATOR_ID = "bench-operator"
LAUNCH_TOKEN_TTL_SECONDS = 3600  # the pair generator and replay setup hold tokens longer than 10 s

# Settings of the service that the caller's environment must not leak into a run.
_SERVICE_PREFIXES = (
    "DATABASE_URL",
    "DATA_DIR",
    "GATEWAY_",
    "BETLINK_",
    "BIDPAW_",
    "DATA_ENCRYPTION_KEY",
    "IDEMPOTENCY_",
    "DB_",
    "LOG_",
    "MAX_BODY",
)
BIDPAW_GAME_ID = "bench-game"


@dataclass(frozen=True)
class Secrets:
    gateway_key: str
    betlink_key: str
    encryption_key: str
    bidpaw_client_id: str
    bidpaw_secret: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            gateway_key="gw-bench-" + secrets.token_urlsafe(16),
            betlink_key="bl-bench-" + secrets.token_urlsafe(16),
            encryption_key=base64.b64encode(secrets.token_bytes(32)).decode(),
            bidpaw_client_id="bench-casino",
            bidpaw_secret="bp-bench-" + secrets.token_urlsafe(16),
        )


def clean_environ() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith(_SERVICE_PREFIXES)}


def service_env(
    *,
    database_url: str,
    data_dir: Path,
    keys: Secrets,
    sandbox_port: int | None,
    overrides: Mapping[str, str],
) -> dict[str, str]:
    env = clean_environ()
    env.update(
        {
            "DATABASE_URL": database_url,
            "DATA_DIR": str(data_dir),
            "GATEWAY_API_KEYS": keys.gateway_key,
            "BETLINK_API_KEYS": keys.betlink_key,
            "DATA_ENCRYPTION_KEY": keys.encryption_key,
            "BETLINK_OPERATOR_ID": OPERATOR_ID,
            "BETLINK_REDIRECT_URL": "https://casino.example/",
            "BETLINK_LAUNCH_TOKEN_TTL_SECONDS": str(LAUNCH_TOKEN_TTL_SECONDS),
            "BIDPAW_CLIENT_ID": keys.bidpaw_client_id,
            "BIDPAW_SECRET_KEY": keys.bidpaw_secret,
            "BIDPAW_GAME_ID": BIDPAW_GAME_ID,
        }
    )
    if sandbox_port is not None:
        env["BIDPAW_API_URL"] = f"http://127.0.0.1:{sandbox_port}"
    env.update(overrides)
    return env


def _cli(*args: str, wrap: Sequence[str] = ()) -> list[str]:
    """`partner-gateway ARGS` as `python -m partner_gateway ARGS`, optionally under a profiler."""
    return [*(wrap or [sys.executable]), "-m", "partner_gateway", *args]


@functools.cache
def _cli_help(*command: str) -> str | None:
    env = clean_environ()
    env.update({"DATABASE_URL": "postgresql+asyncpg://x@/x", "GATEWAY_API_KEYS": "x"})
    done = subprocess.run(
        [*_cli(*command), "--help"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    return done.stdout if done.returncode == 0 else None


def cli_has_workers() -> bool:
    return "--workers" in (_cli_help("serve") or "")


def cli_has_sandbox() -> bool:
    return _cli_help("bidpaw-sandbox") is not None


def sandbox_available() -> bool:
    try:
        from partner_gateway.bidpaw import sandbox  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Launch:
    command: list[str]
    how: str  # shown in the report


def service_launch(workers: int, *, port: int, wrap: Sequence[str] = ()) -> Launch:
    """`partner-gateway serve`; for several workers, its `--workers` or else uvicorn's on a factory.

    `wrap` runs the command under a profiler (`python -m cProfile -o F` ...).
    """
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    if cli_has_workers():
        return Launch(_cli(*serve, "--workers", str(workers), wrap=wrap), "partner-gateway serve --workers")
    if workers == 1:
        return Launch(_cli(*serve, wrap=wrap), "partner-gateway serve")
    command = [sys.executable, str(SERVE_SCRIPT), "service", "--port", str(port), "--workers", str(workers)]
    return Launch(command, "uvicorn --workers on a factory (the CLI has no --workers)")


def launch_service(
    workers: int, *, env: Mapping[str, str], workdir: Path, wrap: Sequence[str] = (), tag: str = ""
) -> Server:
    """Start the service (not waiting for it: call .ready())."""
    port = free_port()
    launch = service_launch(workers, port=port, wrap=wrap)
    return Server(
        f"the service ({workers} worker(s))",
        launch.command,
        cwd=workdir,
        env=env,
        log=workdir / f"service-{workers}w{tag}.log",
        port=port,
        workers=workers,
        how=launch.how,
    )


def launch_trivial(workers: int, *, workdir: Path) -> Server:
    port = free_port()
    command = [sys.executable, str(SERVE_SCRIPT), "trivial", "--port", str(port), "--workers", str(workers)]
    return Server(
        f"the trivial app ({workers} worker(s))",
        command,
        cwd=workdir,
        env=clean_environ(),
        log=workdir / f"trivial-{workers}w.log",
        port=port,
        workers=workers,
        how="uvicorn on a factory, with the options of partner-gateway serve",
    )


def launch_floor(workers: int, *, env: Mapping[str, str], workdir: Path) -> Server:
    """The hand-written floor (gwbench/floor.py), served like the service: same server, options, workers."""
    port = free_port()
    command = [sys.executable, str(SERVE_SCRIPT), "floor", "--port", str(port), "--workers", str(workers)]
    return Server(
        f"the hand-written floor ({workers} worker(s))",
        command,
        cwd=workdir,
        env=env,
        log=workdir / f"floor-{workers}w.log",
        port=port,
        workers=workers,
        how="uvicorn on a factory, with the options of partner-gateway serve",
    )


def launch_sandbox(*, keys: Secrets, workdir: Path) -> Server:
    port = free_port()
    env = clean_environ()
    env.update({"BIDPAW_CLIENT_ID": keys.bidpaw_client_id, "BIDPAW_SECRET_KEY": keys.bidpaw_secret})
    if cli_has_sandbox():
        command = _cli("bidpaw-sandbox", "--host", "127.0.0.1", "--port", str(port))
        how = "partner-gateway bidpaw-sandbox"
    else:
        command = [sys.executable, str(SERVE_SCRIPT), "sandbox", "--port", str(port)]
        how = "uvicorn on partner_gateway.bidpaw.sandbox (the CLI has no bidpaw-sandbox command yet)"
    # Its only route answers any request (400 to an unsigned one): that is readiness enough.
    return Server(
        "the BidPaw sandbox",
        command,
        cwd=workdir,
        env=env,
        log=workdir / "sandbox.log",
        port=port,
        ready_path="/api/casino/open-session/",
        how=how,
    )

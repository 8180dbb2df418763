"""Child processes: started in their own session, bounded in time, their CPU time accounted."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


class BenchError(Exception):
    """Something the benchmark cannot work around; the message says what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class Finished:
    returncode: int
    cpu_seconds: float  # user + system of the process and its reaped children
    wall_seconds: float
    stdout: str
    stderr: str


def run_measured(
    command: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdout_path: Path,
) -> Finished:
    """Run to completion (killed after `timeout`), with the exact CPU time from wait4()."""
    stderr_path = stdout_path.with_suffix(".stderr")
    started = time.perf_counter()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            list(command), cwd=cwd, env=dict(env) if env is not None else None, stdout=out, stderr=err
        )
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    wall = time.perf_counter() - started
    return Finished(
        returncode=proc.returncode,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        wall_seconds=wall,
        stdout=stdout_path.read_text(errors="replace"),
        stderr=stderr_path.read_text(errors="replace"),
    )


def _tree_cpu(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class Server:
    """A long-running child (service, trivial app, sandbox) in its own process group."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        port: int,
        workers: int = 1,
        ready_path: str = "/healthz",
        how: str = "",
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        self.workers = workers
        self.ready_path = ready_path
        self.how = how  # how it was started, for the report
        self.command = list(command)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command,
                cwd=cwd,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def processes(self) -> list[psutil.Process]:
        """The server and its children (uvicorn's worker processes)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def ready(self) -> Server:
        """Wait until it answers and every worker process has finished starting."""
        self.wait_ready(self.ready_path)
        self.wait_settled(workers=self.workers)
        return self

    def wait_ready(self, path: str = "/healthz", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", path)
                if conn.getresponse().status < 500:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer {path} within {timeout:g} s:\n{tail(self.log)}")

    def wait_settled(self, *, workers: int, timeout: float = 60.0) -> None:
        """Wait until every worker process is up and idle (uvicorn answers once the first one is)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline and quiet < 2:
            processes = self.processes()
            before = _tree_cpu(processes)
            time.sleep(0.25)
            used = _tree_cpu(processes) - before
            enough = workers == 1 or len(processes) > workers  # the supervisor and its workers
            quiet = quiet + 1 if enough and used < 0.025 else 0
        if quiet < 2:
            raise BenchError(f"{self.name} did not settle within {timeout:g} s:\n{tail(self.log)}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful: profilers write their output), then SIGKILL of its process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # uvicorn's workers leave with their supervisor; anything left in our group goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

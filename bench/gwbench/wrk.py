"""One measured run: wrk with a Lua script, and the CPU that each party used meanwhile (psutil)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from gwbench.scenarios import Scenario
from gwbench.servers import BenchError, cpu_seconds

LUA = Path(__file__).resolve().parent / "lua"
CPUS = os.cpu_count() or 1


@dataclass
class Row:
    """One line of the table. CPU figures are milliseconds per unit (a request, a pair)."""

    scenario: str
    workers: int | None  # None: not the service's kind of server (the sandbox, pgbench)
    clients: int
    rate: float  # units per second
    p50: float  # ms
    p99: float
    errors: int  # unexpected answers and socket errors
    units: int
    app_ms: float = 0.0  # the served processes
    pg_ms: float = 0.0  # the embedded PostgreSQL
    gen_ms: float = 0.0  # wrk (or pgbench)
    load: float = 0.0  # the machine's 1-minute load average when the run started
    note: str = ""

    @property
    def valid(self) -> bool:
        return self.units > 0 and self.errors <= 0.01 * self.units


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: apt-get install wrk")
    return path


Processes = Callable[[], list[psutil.Process]]


def measured(
    scenario: str,
    command: list[str],
    *,
    workers: int | None,
    clients: int,
    app: Processes,
    pg: Processes,
    parse: Callable[[str], dict[str, float]],
    timeout: float,
    log: Path,
) -> Row:
    """Run `command` (wrk or pgbench) to completion; `parse` reads its output into the row's fields."""
    load = os.getloadavg()[0]
    app0, pg0 = cpu_seconds(app()), cpu_seconds(pg())
    gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    app_s, pg_s = cpu_seconds(app()) - app0, cpu_seconds(pg()) - pg0
    gen_s = gen1.ru_utime + gen1.ru_stime - gen0.ru_utime - gen0.ru_stime
    log.write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    try:
        found = parse(done.stdout)
    except (ValueError, KeyError, StopIteration) as exc:
        raise BenchError(
            f"{command[0]} failed ({done.returncode}): {done.stderr[-400:]} (see {log})"
        ) from exc
    units = int(found["units"])
    per = 1000 / units if units else 0.0
    return Row(
        scenario,
        workers,
        clients,
        rate=units / found["seconds"],
        p50=found["p50"],
        p99=found["p99"],
        errors=int(found["errors"]),
        units=units,
        app_ms=app_s * per,
        pg_ms=pg_s * per,
        gen_ms=gen_s * per,
        load=load,
    )


def parse_wrk(stdout: str) -> dict[str, float]:
    """The GWBENCH line that gwbench/lua/common.lua's done() prints."""
    line = next(line for line in stdout.splitlines() if line.startswith("GWBENCH "))
    s = json.loads(line.removeprefix("GWBENCH "))
    counted = s["units"] > 0 or s["unexpected"] > 0  # the script counts its own units (the pair)
    units = s["units"] if counted else s["requests"] - s["status_errors"]
    errors = s["socket_errors"] + s["unexpected"] + (0 if counted else s["status_errors"])
    return {
        "seconds": s["seconds"],
        "units": units,
        "errors": errors,
        "p50": s["p50_us"] / 1000,
        "p99": s["p99_us"] / 1000,
    }


def wrk_command(
    scenario: Scenario, args: list[str], *, port: int, clients: int, seconds: float, workdir: Path
) -> list[str]:
    """wrk with gwbench/lua/common.lua and the scenario's script; one thread per connection when
    the script follows each connection (the pair), else at most one per core."""
    script = workdir / f"wrk-{scenario.script}"
    if not script.exists():
        script.write_text((LUA / "common.lua").read_text() + "\n" + (LUA / scenario.script).read_text())
    threads = clients if scenario.per_connection else min(clients, CPUS)
    if scenario.split:  # each thread takes its own share of the requests (once.lua)
        args = [*args, str(threads)]
    command = [wrk_path(), "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(seconds))}s"]
    return [*command, "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/", "--", *args]

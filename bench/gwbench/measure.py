"""What one run measured: rate, latency, errors, and who used the CPU meanwhile."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil

from gwbench.pg import Counters

CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Latency:
    """Latency percentiles in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of_micros(cls, samples: Sequence[float]) -> Latency:
        ordered = sorted(samples)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50) / 1000,
            p90=percentile(ordered, 90) / 1000,
            p99=percentile(ordered, 99) / 1000,
            max=(ordered[-1] if ordered else 0.0) / 1000,
        )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 when there are none)."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class CpuShares:
    """CPU seconds over a run's wall time: load generator, app, PostgreSQL, and everything else."""

    wall: float
    busy: float  # the whole machine
    gen: float  # the load generator (or pgbench)
    app: float  # the service's processes (and the sandbox when it serves the run)
    pg: float  # the embedded PostgreSQL: postmaster and backends, including those that exited

    def share(self, seconds: float) -> float:
        """Fraction of the machine (all cores) over the run."""
        return seconds / (self.wall * CPUS) if self.wall > 0 else 0.0

    @property
    def other(self) -> float:
        """What none of the above used: the kernel, and other work on the machine (a busy machine
        makes every figure lower)."""
        return max(0.0, self.busy - self.gen - self.app - self.pg)


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(sum(times)) - float(idle)


def _cpu_of(processes: Sequence[psutil.Process]) -> dict[int, float]:
    """CPU seconds per process, counting the children it has reaped (exited backends, workers):
    a process that exits during a run moves its time into its parent's, so deltas stay exact."""
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        reaped = getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
        seconds[process.pid] = times.user + times.system + reaped
    return seconds


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after.values()) - sum(before.values())


def _none() -> list[psutil.Process]:
    return []


@dataclass
class CpuWindow:
    """Samples the machine and the app's processes around a run; the generator's CPU comes from wait4."""

    app_processes: Callable[[], list[psutil.Process]] = _none
    pg_processes: Callable[[], list[psutil.Process]] = _none
    _start: float = 0.0
    _busy: float = 0.0
    _app: dict[int, float] = field(default_factory=dict)
    _pg: dict[int, float] = field(default_factory=dict)

    def __enter__(self) -> CpuWindow:
        self._app = _cpu_of(self.app_processes())
        self._pg = _cpu_of(self.pg_processes())
        self._busy = _busy_seconds()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def shares(self, *, gen_seconds: float) -> CpuShares:
        wall = time.perf_counter() - self._start
        busy = _busy_seconds() - self._busy
        app = _delta(self._app, _cpu_of(self.app_processes()))
        pg = _delta(self._pg, _cpu_of(self.pg_processes()))
        return CpuShares(wall=wall, busy=busy, gen=gen_seconds, app=app, pg=pg)


@dataclass
class Row:
    """One line of the table."""

    section: str  # "ceiling" or "service"
    scenario: str  # a key of report.TITLES
    clients: int
    workers: int | None
    unit: str  # "tps", "rps", "pairs/s"
    rate: float
    latency: Latency | None
    errors: int
    units: int
    cpu: CpuShares | None = None
    db: Counters | None = None
    tool: str = ""
    note: str = ""
    kinds: dict[str, Latency] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.units > 0 and self.errors <= 0.01 * max(1, self.units)

"""The load generator, a separate process: wrk with the Lua scripts in lua/, or pyload.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gwbench.measure import CPUS, Latency
from gwbench.procs import BenchError, run_measured

LUA_DIR = Path(__file__).resolve().parent / "lua"
PYLOAD = Path(__file__).resolve().parent / "pyload.py"
SCENARIOS = ("get", "session", "pair", "replay", "proxy", "direct")


@dataclass(frozen=True)
class Scenario:
    kind: str  # one of SCENARIOS
    path: str = "/"  # for "get"
    data_file: Path | None = None  # "direct": path<TAB>sign lines; "replay": key<TAB>body lines


@dataclass(frozen=True)
class Credentials:
    gateway_key: str
    betlink_key: str
    operator_id: str
    users: int


@dataclass(frozen=True)
class LoadResult:
    tool: str
    duration_s: float
    requests: int
    errors: int
    units: int  # successful requests, or completed pairs
    latency: Latency  # of a unit
    gen_cpu_s: float
    wall_s: float
    kinds: dict[str, Latency] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.units / self.duration_s if self.duration_s > 0 else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if path is None:
        return ""
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else "?"


class LoadGenerator:
    def __init__(self, tool: str, *, workdir: Path, credentials: Credentials) -> None:
        if tool not in ("wrk", "python"):
            raise ValueError(tool)
        self.tool = tool
        self.workdir = workdir
        self.credentials = credentials
        self._scripts: dict[str, Path] = {}
        self._runs = 0

    @property
    def label(self) -> str:
        if self.tool == "wrk":
            return f"wrk {wrk_version()} (LuaJIT scripts)"
        return "pyload.py (Python asyncio; install wrk for a lighter generator)"

    def run(self, scenario: Scenario, *, port: int, connections: int, seconds: float) -> LoadResult:
        self._runs += 1
        if self.tool == "wrk":
            return self._wrk(scenario, port=port, connections=connections, seconds=seconds)
        return self._python(scenario, port=port, connections=connections, seconds=seconds)

    # wrk ---------------------------------------------------------------------------------
    def _script(self, kind: str) -> Path:
        if kind not in self._scripts:
            path = self.workdir / f"wrk-{kind}.lua"
            common = (LUA_DIR / "common.lua").read_text()
            path.write_text(common + "\n" + (LUA_DIR / f"{kind}.lua").read_text())
            self._scripts[kind] = path
        return self._scripts[kind]

    def _script_args(self, scenario: Scenario) -> list[str]:
        c = self.credentials
        if scenario.kind in ("session", "proxy"):
            return [c.gateway_key, str(c.users)]
        if scenario.kind == "pair":
            return [c.gateway_key, c.betlink_key, c.operator_id, str(c.users)]
        if scenario.kind == "replay":
            return [c.betlink_key, str(scenario.data_file)]
        if scenario.kind == "direct":
            return [str(scenario.data_file)]
        return []

    def _wrk(self, scenario: Scenario, *, port: int, connections: int, seconds: float) -> LoadResult:
        wrk = wrk_path()
        if wrk is None:
            raise BenchError("wrk is not installed")
        # The pair needs one connection per thread so that Lua can follow each connection.
        threads = connections if scenario.kind == "pair" else min(connections, CPUS)
        duration = max(1, round(seconds))
        path = scenario.path if scenario.kind == "get" else "/"
        command = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s"]
        command += ["-s", str(self._script(scenario.kind)), f"http://127.0.0.1:{port}{path}", "--"]
        command += self._script_args(scenario)
        out = self.workdir / f"load-{self._runs}.out"
        done = run_measured(command, cwd=self.workdir, timeout=duration + 30, stdout_path=out)
        summary_line = next((line for line in done.stdout.splitlines() if line.startswith("GWBENCH ")), None)
        if done.returncode != 0 or summary_line is None:
            raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout[-500:]}")
        summary: dict[str, Any] = json.loads(summary_line.removeprefix("GWBENCH "))
        statuses: dict[str, int] = {}
        samples: dict[str, list[float]] = {}
        for line in done.stdout.splitlines():
            if line.startswith("GWBENCH_STATUS "):
                _, key, n = line.split(" ")
                statuses[key] = statuses.get(key, 0) + int(n)
            elif line.startswith("GWBENCH_SAMPLES "):
                _, kind, values = line.split(" ", 2)
                samples.setdefault(kind, []).extend(float(v) for v in values.split(",") if v)
        errors = summary["errors"]
        socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
        duration_s = summary["duration_us"] / 1e6
        kinds = {kind: Latency.of_micros(values) for kind, values in samples.items()}
        if scenario.kind == "pair":
            pairs = statuses.get("auth:200", 0)
            unexpected = sum(n for key, n in statuses.items() if key not in ("session:201", "auth:200"))
            return LoadResult(
                tool="wrk",
                duration_s=duration_s,
                requests=summary["requests"],
                errors=unexpected + socket_errors,
                units=pairs,
                latency=kinds.get("pair", Latency(0, 0, 0, 0, 0)),
                gen_cpu_s=done.cpu_seconds,
                wall_s=done.wall_seconds,
                kinds=kinds,
                statuses=statuses,
            )
        lat = summary["latency_us"]
        latency = Latency(
            count=summary["requests"],
            p50=lat["p50"] / 1000,
            p90=lat["p90"] / 1000,
            p99=lat["p99"] / 1000,
            max=lat["max"] / 1000,
        )
        return LoadResult(
            tool="wrk",
            duration_s=duration_s,
            requests=summary["requests"],
            errors=errors["status"] + socket_errors,
            units=summary["requests"] - errors["status"],
            latency=latency,
            gen_cpu_s=done.cpu_seconds,
            wall_s=done.wall_seconds,
        )

    # Python ------------------------------------------------------------------------------
    def _python(self, scenario: Scenario, *, port: int, connections: int, seconds: float) -> LoadResult:
        c = self.credentials
        spec = {
            "scenario": scenario.kind,
            "host": "127.0.0.1",
            "port": port,
            "connections": connections,
            "duration": seconds,
            "path": scenario.path,
            "data_file": str(scenario.data_file) if scenario.data_file else None,
            "gateway_key": c.gateway_key,
            "betlink_key": c.betlink_key,
            "operator_id": c.operator_id,
            "users": c.users,
        }
        spec_file = self.workdir / f"load-{self._runs}.json"
        spec_file.write_text(json.dumps(spec))
        out = self.workdir / f"load-{self._runs}.out"
        command = [sys.executable, str(PYLOAD), str(spec_file)]
        done = run_measured(command, cwd=self.workdir, timeout=seconds + 60, stdout_path=out)
        if done.returncode != 0:
            raise BenchError(f"pyload.py failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        kinds = {
            kind: Latency(
                count=k["count"],
                p50=k["p50"] / 1000,
                p90=k["p90"] / 1000,
                p99=k["p99"] / 1000,
                max=k["max"] / 1000,
            )
            for kind, k in result["kinds"].items()
        }
        statuses: dict[str, int] = result["statuses"]
        if scenario.kind == "pair":
            units = statuses.get("auth:200", 0)
            errors = result["errors"] + sum(
                n
                for key, n in statuses.items()
                if key not in ("session:201", "auth:200") and int(key[-3:]) < 400
            )
            latency = kinds.get("pair", Latency(0, 0, 0, 0, 0))
        else:
            errors = result["errors"]
            units = sum(n for key, n in statuses.items() if int(key.rsplit(":", 1)[1]) < 400)
            latency = kinds.get("request", Latency(0, 0, 0, 0, 0))
        return LoadResult(
            tool="python",
            duration_s=result["duration_us"] / 1e6,
            requests=result["requests"],
            errors=errors,
            units=units,
            latency=latency,
            gen_cpu_s=done.cpu_seconds,
            wall_s=done.wall_seconds,
            kinds=kinds if scenario.kind == "pair" else {},
            statuses=statuses,
        )

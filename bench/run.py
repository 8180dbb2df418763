"""partner-gateway's benchmark: wrk (and pgbench) against the service and this machine's ceilings.

    python3 scripts/dev.py bench [--quick] [--check] [--scenarios a,b] [options]

Loopback only, on an embedded PostgreSQL in a temporary directory. Installs wrk from Debian's
packages when it is missing (as root with apt-get, as the tests install their programs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from gwbench import debian, pgbench, report, servers
from gwbench.scenarios import GAME_ID, SCENARIOS, Context, Scenario
from gwbench.servers import BenchError, Keys, Server
from gwbench.wrk import CPUS, Row, measured, parse_wrk, wrk_command

BENCH_DIR = Path(__file__).resolve().parent
WARM_UP = 1.0  # seconds of the pair before measuring a service or floor (pool, statement caches)


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


Processes = Callable[[], list[psutil.Process]]
Parse = Callable[[str], dict[str, float]]


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    pg: servers.Postgres
    env: dict[str, str]  # the service's and the floor's
    overrides: dict[str, str]  # --env
    ctx: Context
    rows: list[Row]

    def run(
        self,
        scenario: Scenario,
        server: Server,
        clients: int,
        workers: int | None,
        *,
        tag: str = "",
        extra: Processes = list,
    ) -> Row:
        """wrk with the scenario's script; `tag` names a variant (`session@pgbouncer`), `extra`
        processes count as the app's (PgBouncer)."""
        return self._wrk(
            scenario, server, clients, workers, name=scenario.name + (f"@{tag}" if tag else ""), extra=extra
        )

    def _wrk(
        self,
        scenario: Scenario,
        server: Server,
        clients: int,
        workers: int | None,
        *,
        name: str,
        extra: Processes,
        seconds: float = 0,
        keep: bool = True,
    ) -> Row:
        args = scenario.args(self.ctx)
        seconds = seconds or self.args.seconds
        command = wrk_command(
            scenario, args, port=server.port, clients=clients, seconds=seconds, workdir=self.workdir
        )
        return self._measure(
            name, command, workers, clients, lambda: server.processes() + extra(), parse_wrk, keep
        )

    def pgbench(self, name: str, script: str, clients: int, *, protocol: str = "prepared", **via: Any) -> Row:
        """pgbench on `script`, straight to PostgreSQL or `via` PgBouncer: its `where` (connection
        arguments) and `extra` (its processes, counted as the app's)."""
        path = self.workdir / f"{re.sub(r'[^a-z-]+', '-', name)}.sql"  # pgbench: -f FILE@WEIGHT
        path.write_text(script)
        where = via.get("where", ["-h", str(self.pg.socket_dir), "-U", "postgres", "postgres"])
        command = [str(self.pg.bin_dir / "pgbench"), "-n", "-M", protocol, "-c", str(clients)]
        command += ["-j", str(min(clients, CPUS)), "-T", str(max(1, round(self.args.seconds)))]
        return self._measure(
            name,
            [*command, "-f", str(path), *where],
            None,
            clients,
            via.get("extra", list),
            pgbench.parse,
            True,
        )

    def _measure(
        self,
        name: str,
        command: list[str],
        workers: int | None,
        clients: int,
        app: Processes,
        parse: Parse,
        keep: bool,
    ) -> Row:
        log_file = self.workdir / f"{name}-{workers}w-{clients}c.out"
        row = measured(
            name,
            command,
            workers=workers,
            clients=clients,
            app=app,
            pg=self.pg.processes,
            parse=parse,
            timeout=self.args.seconds + 60,
            log=log_file,
        )
        if keep:
            self.rows.append(row)
            log(report.table([row])[-1])
        return row

    def warm(self, server: Server) -> None:
        """The pair for a second: the pool's connections, the statement caches."""
        pair = next(s for s in SCENARIOS if s.name == "pair")
        self._wrk(
            pair,
            server,
            max(self.args.clients),
            None,
            name="warm-up",
            extra=list,
            seconds=WARM_UP,
            keep=False,
        )


@dataclass(frozen=True)
class Kind:
    """What scenarios are served by: a launcher (given the worker count), the path that answers
    once it is ready, and for a sandbox (started once, before the rest, up for the whole run) the
    settings that point the service at it."""

    launch: Callable[[Bench, int], Server]
    ready: str
    sandbox: Callable[[Server], dict[str, str]] | None = None


SERVERS = {
    "bidpaw-sandbox": Kind(
        lambda b, w: servers.bidpaw_sandbox(b.ctx.keys, workdir=b.workdir),
        "/",
        lambda server: {"BIDPAW_API_URL": f"http://127.0.0.1:{server.port}"},
    ),
    "wallet-sandbox": Kind(
        lambda b, w: servers.wallet_sandbox(b.ctx.keys, workdir=b.workdir),
        "/_sandbox/faults",
        lambda server: {"WALLET_URL": f"http://127.0.0.1:{server.port}"},
    ),
    "trivial": Kind(
        lambda b, w: servers.uvicorn_app("trivial_app", w, env={}, workdir=b.workdir), "/trivial"
    ),
    "floor": Kind(lambda b, w: servers.uvicorn_app("floor_app", w, env=b.env, workdir=b.workdir), "/healthz"),
    "service": Kind(lambda b, w: servers.service(w, env=b.env, workdir=b.workdir), "/readyz"),
}


def service_env(pg: servers.Postgres, keys: Keys, workdir: Path) -> dict[str, str]:
    return servers.clean_environ() | {
        "DATABASE_URL": pg.url,
        "DATA_DIR": str(workdir / "service-data"),
        "GATEWAY_API_KEYS": keys.gateway,
        "BETLINK_API_KEYS": keys.betlink,
        "DATA_ENCRYPTION_KEY": keys.encryption,
        "BETLINK_OPERATOR_ID": servers.OPERATOR_ID,
        "BETLINK_REDIRECT_URL": "https://casino.example/",
        "BETLINK_LAUNCH_TOKEN_TTL_SECONDS": "3600",  # the replay setup holds tokens a while
        "BIDPAW_CLIENT_ID": keys.bidpaw_client_id,
        "BIDPAW_SECRET_KEY": keys.bidpaw_secret,
        "BIDPAW_GAME_ID": GAME_ID,
        "BIDPAW_CALLBACK_SECRET": keys.callback,
        "WALLET_SECRET": keys.wallet,
    }


def run_scenarios(b: Bench, chosen: list[Scenario], stack: contextlib.ExitStack) -> None:
    """The sandboxes first (once each, kept up), then each server per worker count; every
    scenario of a server at each connection count."""
    sandboxes = {name: kind for name, kind in SERVERS.items() if kind.sandbox}
    for name, kind in sandboxes.items():
        server = stack.enter_context(servers.started(kind.launch(b, 1), kind.ready))
        b.env |= kind.sandbox(server) if kind.sandbox else {}
        for scenario in (s for s in chosen if s.server == name):
            for clients in b.args.clients:
                b.run(scenario, server, clients, None)
    b.env |= b.overrides
    for w in b.args.workers:  # per worker count, the servers one after the other: neighbouring runs
        for name, kind in SERVERS.items():
            mine = [s for s in chosen if s.server == name]
            if not mine or name in sandboxes:
                continue
            with servers.started(kind.launch(b, w), kind.ready, workers=w) as server:
                log(f"{server.name} up on port {server.port}")
                if name == "service":
                    b.ctx.service_url = f"http://127.0.0.1:{server.port}"
                if name in ("service", "floor"):
                    b.warm(server)
                for scenario in mine:
                    for clients in b.args.clients:
                        b.run(scenario, server, clients, w)
                if name == "service" and b.args.profile and w == b.args.workers[0]:
                    py_spy(b, server, next(s for s in SCENARIOS if s.name == b.args.profile))


def py_spy(b: Bench, server: Server, scenario: Scenario) -> None:
    """A py-spy flame graph (SVG) of the service's processes under one scenario."""
    spy = shutil.which("py-spy") or str(Path.home() / ".local" / "bin" / "py-spy")
    seconds = max(5, round(b.args.seconds))
    output = b.args.results / f"profile-{scenario.name}.svg"
    b.args.results.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--pid", str(server.proc.pid), "--subprocesses", "--rate", "250"]
    command += ["--duration", str(seconds), "--format", "flamegraph", "--output", str(output)]
    recording = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    b.run(scenario, server, max(b.args.clients), None, tag="profiled")
    recording.wait(timeout=seconds + 60)
    log(f"profile: {output}")


def pgbouncer_phase(b: Bench) -> None:
    """The service with DB_POOLER=pgbouncer through PgBouncer (the reference ini), beside direct;
    and pgbench's pair through PgBouncer, with and without SET LOCAL of the timeouts on BEGIN."""
    from partner_gateway.config import Settings
    from partner_gateway.db import session_bounds

    os.environ["PATH"] += ":/usr/local/sbin:/usr/sbin:/sbin"
    if shutil.which("pgbouncer") is None:
        log("pgbouncer is not installed (apt-get install pgbouncer): no PgBouncer rows")
        return
    w, clients = max(b.args.workers), max(b.args.clients)
    with servers.pgbouncer(b.pg) as bouncer:
        env = {**b.env, "DATABASE_URL": bouncer.url, "DB_POOLER": "pgbouncer"}
        migrate = [sys.executable, "-m", "partner_gateway", "migrate"]
        done = subprocess.run(migrate, env=env, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BenchError(f"migrate through PgBouncer failed: {done.stderr[-300:]}")
        service = servers.service(w, env=env, workdir=b.workdir, tag="-pgbouncer")
        with servers.started(service, "/readyz", workers=w) as server:
            b.warm(server)
            for scenario in (s for s in SCENARIOS if s.name in ("session", "pair")):
                for c in b.args.clients:
                    b.run(scenario, server, c, w, extra=lambda: [bouncer.process], tag="pgbouncer")
        bounced = ["-h", "127.0.0.1", "-p", str(bouncer.port), "-U", "postgres", "gateway"]
        os.environ["PGPASSWORD"] = bouncer.password
        bounds = session_bounds(Settings(_env_file=None))
        bounds.pop("default_transaction_isolation")  # BEGIN names its level
        pair, with_bounds = pgbench.script("pair"), pgbench.script("pair", set_local=bounds)
        # The simple protocol throughout: PgBouncer 1.18 keeps no prepared statements.
        via = {"where": bounced, "extra": lambda: [bouncer.process]}
        b.pgbench("pgbench-pair@simple", pair, clients, protocol="simple")
        b.pgbench("pgbench-pair@pgbouncer", pair, clients, protocol="simple", **via)
        b.pgbench("pgbench-pair@pgbouncer+SET LOCAL", with_bounds, clients, protocol="simple", **via)


def pgbench_ceilings(b: Bench) -> None:
    """pgbench on the store's statements: what PostgreSQL alone can do with the service's SQL."""
    for kind in ("session", "pair"):
        for clients in b.args.clients:
            b.pgbench(f"pgbench-{kind}", pgbench.script(kind), clients)


# Measurements that are not a wrk scenario, by name (as --scenarios takes them): functions of the
# Bench that add rows, run before the scenarios or after them.
BEFORE: dict[str, Callable[[Bench], None]] = {"pgbench": pgbench_ceilings}
AFTER: dict[str, Callable[[Bench], None]] = {"pgbouncer": pgbouncer_phase}
QUICK_SKIPS = {"pgbouncer"}


def names(*, quick: bool) -> list[str]:
    every = [*BEFORE, *(s.name for s in SCENARIOS), *AFTER]
    return [name for name in every if not (quick and name in QUICK_SKIPS)]


def parser() -> argparse.ArgumentParser:
    def numbers(text: str) -> list[int]:
        return [int(part) for part in text.split(",")]

    p = argparse.ArgumentParser(
        prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="1 s runs, 1 worker, no PgBouncer phase")
    p.add_argument("--seconds", type=float, help="seconds per run (default 5; --quick 1)")
    p.add_argument("--clients", type=numbers, default=[1, 16], help="connection counts (default 1,16)")
    p.add_argument("--workers", type=numbers, help="worker processes (default 1,2; --quick 1)")
    everything = ", ".join(names(quick=False))
    p.add_argument(
        "--scenarios", help=f"comma-separated, of: {everything} (default: all; --quick: not pgbouncer)"
    )
    p.add_argument("--check", action="store_true", help="exit 3 when a target is missed or not measured")
    p.add_argument(
        "--profile", metavar="SCENARIO", help="also a py-spy flame graph of the service under SCENARIO"
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting, e.g. DB_POOL_SIZE=30",
    )
    p.add_argument("--results", type=Path, help="where to save (default bench/results/<time>/)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temporary directory (every log)")
    return p


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that every server is stopped, and the embedded PostgreSQL


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    args.workers = args.workers or ([1] if args.quick else [1, 2])
    args.results = args.results or BENCH_DIR / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    wanted = set(args.scenarios.split(",") if args.scenarios else names(quick=args.quick))
    if unknown := wanted - set(names(quick=False)) | ({args.profile} - {s.name for s in SCENARIOS} - {None}):
        raise SystemExit(f"bench: unknown scenario(s): {', '.join(sorted(map(str, unknown)))}")
    signal.signal(signal.SIGTERM, _interrupted)
    debian.ensure("wrk")
    keys, workdir = Keys.generate(), Path(tempfile.mkdtemp(prefix="gwbench-"))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    started = time.monotonic()
    rows: list[Row] = []
    try:
        with contextlib.ExitStack() as stack:
            pg = stack.enter_context(servers.embedded_postgres(workdir / "data"))
            overrides = dict(item.split("=", 1) for item in args.env)
            b = Bench(
                args,
                workdir,
                pg,
                service_env(pg, keys, workdir),
                overrides,
                Context(keys, workdir, args.seconds),
                rows,
            )
            for name in (name for name in BEFORE if name in wanted):
                BEFORE[name](b)
            run_scenarios(b, [s for s in SCENARIOS if s.name in wanted], stack)
            for name in (name for name in AFTER if name in wanted):
                AFTER[name](b)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"bench: {exc}\nbench: logs kept in {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bench: interrupted; logs kept in {workdir}", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started
    text = "\n".join(
        [
            f"partner-gateway benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, took {elapsed:.0f} s",
            f"machine: {CPUS} CPUs; before the start: {uptime}",
            f"runs: {args.seconds:g} s each; connections {args.clients}; workers {args.workers}",
            "",
            *report.table(rows),
            "",
            "app/pg/gen ms: CPU ms per unit of the served processes, of PostgreSQL, of wrk or pgbench;",
            "load: the 1-minute load average as the run started (over the core count: noisy figures).",
            "",
            "TARGETS",
            *report.targets(rows),
            *report.app_cpu(rows, max(args.clients)),
            *report.beside(rows, "wallet", "session", max(args.clients)),
            *report.against(rows, "pgbouncer"),
        ]
    )
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "report.txt").write_text(text + "\n")
    print(f"\nsaved in {args.results.resolve()}")
    if args.keep_temp:
        print(f"temporary files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.check and (missed := report.missed(rows)):
        for name in missed:
            print(f"bench --check: target missed: {name}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

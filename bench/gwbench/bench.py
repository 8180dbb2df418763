"""The benchmark's phases: ceilings (pgbench, trivial app, sandbox), the service, the profile.

Every server is started up front, while PostgreSQL starts and is seeded (an idle server costs no
CPU), so the time goes to measuring; each is stopped when the run ends or is interrupted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from gwbench import audit, servers, sql
from gwbench.load import Credentials, LoadGenerator, LoadResult, Scenario
from gwbench.measure import CPUS, CpuWindow, Latency, Row
from gwbench.pg import USERS, Postgres
from gwbench.procs import BenchError, Server, run_measured
from gwbench.profiling import Profiler, summarize

UNLOADED = 1  # connections for the unloaded BidPaw latency (the proxy overhead target)
_STARTED = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr; the table goes to stdout at the end."""
    print(f"[{time.monotonic() - _STARTED:4.0f} s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    seconds: float  # measured time of each run
    warmup: float  # per service
    clients: tuple[int, ...]
    workers: tuple[int, ...]
    seeded_sessions: int
    replay_keys: int
    pgbench_pair: bool
    healthz: bool
    quick: bool
    skip: frozenset[str]
    service_env: dict[str, str]


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    launches: dict[str, str] = field(default_factory=dict)  # what -> how it was started
    audit: audit.Audit | None = None
    statements: dict[str, list[sql.Statement]] = field(default_factory=dict)  # what pgbench runs
    profile: str = ""
    profile_file: Path | None = None

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def _latency_from_pgbench_logs(files: Sequence[Path]) -> Latency:
    samples: list[float] = []
    for path in files:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                samples.append(float(parts[2]))
        path.unlink()
    return Latency.of_micros(samples)


class Bench:
    def __init__(self, plan: Plan, *, workdir: Path, generator: str, outcome: Outcome) -> None:
        self.plan = plan
        self.workdir = workdir
        self.keys = servers.Secrets.generate()
        self.credentials = Credentials(
            gateway_key=self.keys.gateway_key,
            betlink_key=self.keys.betlink_key,
            operator_id=servers.OPERATOR_ID,
            users=USERS,
        )
        self.load = LoadGenerator(generator, workdir=workdir, credentials=self.credentials)
        self.out = outcome
        self._pg: Postgres | None = None
        self.trivial_servers: dict[int, Server] = {}
        self.services: dict[int, Server] = {}
        self.floors: dict[int, Server] = {}
        self.sandbox: Server | None = None
        self.direct_file: Path | None = None
        self.replay_file: Path | None = None

    @property
    def pg(self) -> Postgres:
        if self._pg is None:
            raise RuntimeError("PostgreSQL is not attached yet")
        return self._pg

    # starting ----------------------------------------------------------------------------
    def launch_early(self, stack: contextlib.ExitStack) -> None:
        """What does not need PostgreSQL: the trivial app and the sandbox."""
        if "trivial" not in self.plan.skip:
            for workers in self.plan.workers:
                server = servers.launch_trivial(workers, workdir=self.workdir)
                stack.callback(server.stop)
                self.trivial_servers[workers] = server
        if "bidpaw" not in self.plan.skip:
            if servers.sandbox_available():
                self.sandbox = servers.launch_sandbox(keys=self.keys, workdir=self.workdir)
                stack.callback(self.sandbox.stop)
            else:
                self.out.note("BidPaw: partner_gateway.bidpaw.sandbox is missing; BidPaw rows skipped")

    def launch_services(self, pg: Postgres, stack: contextlib.ExitStack) -> None:
        self._pg = pg
        if "service" in self.plan.skip:
            return
        for workers in self.plan.workers:
            server = servers.launch_service(workers, env=self.service_env(), workdir=self.workdir)
            stack.callback(server.stop)
            self.services[workers] = server
            if "floor" not in self.plan.skip:
                floor = servers.launch_floor(workers, env=self.service_env(), workdir=self.workdir)
                stack.callback(floor.stop)
                self.floors[workers] = floor

    def ready(self) -> None:
        for workers, server in self.trivial_servers.items():
            server.ready()
            self.out.launches[f"trivial app, {workers} worker(s)"] = server.how
        if self.sandbox is not None:
            try:
                self.sandbox.ready()
                self.out.launches["BidPaw sandbox"] = self.sandbox.how
                self.direct_file = self._direct_requests()
            except BenchError as exc:
                self.out.note(f"BidPaw sandbox did not start: {exc}")
                self.sandbox.stop()
                self.sandbox = None
        for workers, server in self.services.items():
            server.ready()
            self.out.launches[f"service, {workers} worker(s)"] = server.how
        for workers, server in self.floors.items():
            server.ready()
            self.out.launches[f"hand-written floor, {workers} worker(s)"] = server.how

    def service_env(self) -> dict[str, str]:
        return servers.service_env(
            database_url=self.pg.url,
            data_dir=self.workdir / "service-data",
            keys=self.keys,
            sandbox_port=self.sandbox.port if self.sandbox else None,
            overrides=self.plan.service_env,
        )

    # ceilings ----------------------------------------------------------------------------
    def audit(self) -> None:
        """What the first service sends per request; it also picks the statements pgbench runs."""
        sent: dict[str, list[str]] = {}
        if self.services and "audit" not in self.plan.skip:
            server = next(iter(self.services.values()))
            self.replay_file = self._replay_requests(server)  # warms the session and authenticate paths
            bidpaw = self._bidpaw_ready(server)
            self.out.audit = audit.run_audit(
                self.pg,
                port=server.port,
                gateway_key=self.keys.gateway_key,
                betlink_key=self.keys.betlink_key,
                operator_id=servers.OPERATOR_ID,
                bidpaw=bidpaw,
            )
            sent = self.out.audit.statements
            log("round trips per request: " + ", ".join(f"{k} {len(v)}" for k, v in sent.items()))
        for kind in ("session", "authenticate"):
            self.out.statements[kind] = sql.resolve(kind, sent.get(kind))

    def pgbench(self) -> None:
        try:
            self.pg.tool("pgbench")
        except BenchError as exc:
            self.out.note(f"pgbench rows skipped: {exc}")
            return
        session, auth = self.out.statements["session"], self.out.statements["authenticate"]
        builders: list[tuple[str, Callable[[], str]]] = [
            ("pgbench-session", lambda: sql.session_script(session)),
            (
                "pgbench-auth",
                lambda: sql.authenticate_script(auth, seeded_sessions=self.plan.seeded_sessions),
            ),
        ]
        if self.plan.pgbench_pair:
            builders.append(("pgbench-pair", lambda: sql.pair_script(session, auth)))
        for name, build in builders:
            try:
                text = build()
            except BenchError as exc:
                self.out.note(f"{name} skipped: {exc}")
                continue
            path = self.workdir / f"{name}.sql"
            path.write_text(text)
            for clients in self.plan.clients:
                self.out.rows.append(self._pgbench_run(name, path, clients))

    def _pgbench_run(self, name: str, script: Path, clients: int) -> Row:
        seconds = max(1, round(self.plan.seconds))
        prefix = f"{name}-{clients}-log"
        command = [str(self.pg.tool("pgbench")), *self.pg.conn_args(), "-n", "-M", "prepared"]
        command += ["-c", str(clients), "-j", str(min(clients, CPUS)), "-T", str(seconds)]
        command += ["-f", str(script), "-l", "--log-prefix", prefix, "postgres"]
        with CpuWindow(pg_processes=self.pg.processes) as window:
            done = run_measured(
                command, cwd=self.workdir, timeout=seconds + 60, stdout_path=self.workdir / f"{prefix}.out"
            )
            cpu = window.shares(gen_seconds=done.cpu_seconds)
        tps = re.search(r"tps = ([\d.]+)", done.stdout)
        processed = re.search(r"actually processed: (\d+)", done.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
        aborted = done.stderr.count("aborted")
        latency = _latency_from_pgbench_logs(sorted(self.workdir.glob(f"{prefix}.*[0-9]")))
        note = ""
        if done.returncode != 0 or tps is None:
            note = "pgbench failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:150]
        row = Row(
            section="ceiling",
            scenario=name,
            clients=clients,
            workers=None,
            unit="tps",
            rate=float(tps.group(1)) if tps else 0.0,
            latency=latency,
            errors=(int(failed.group(1)) if failed else 0) + aborted,
            units=int(processed.group(1)) if processed else 0,
            cpu=cpu,
            tool="pgbench",
            note=note,
        )
        log(f"{name:<16}    c={clients:<3} {row.rate:8.0f} tps     p50 {latency.p50:6.2f} ms  {note}")
        return row

    def _http_run(
        self,
        scenario_key: str,
        scenario: Scenario,
        *,
        server: Server,
        clients: int,
        workers: int | None,
        app: Callable[[], list[psutil.Process]],
        section: str = "service",
        unit: str = "rps",
    ) -> Row:
        before = self.pg.counters()
        with CpuWindow(app_processes=app, pg_processes=self.pg.processes) as window:
            result: LoadResult = self.load.run(
                scenario, port=server.port, connections=clients, seconds=self.plan.seconds
            )
            cpu = window.shares(gen_seconds=result.gen_cpu_s)
        after = self.pg.counters()
        row = Row(
            section=section,
            scenario=scenario_key,
            clients=clients,
            workers=workers,
            unit=unit,
            rate=result.rate,
            latency=result.latency,
            errors=result.errors,
            units=result.units,
            cpu=cpu,
            db=after - before,
            tool=result.tool,
            kinds=result.kinds,
        )
        if result.errors:
            bad = {key: n for key, n in result.statuses.items() if not key.endswith((":200", ":201"))}
            row.note = f"{result.errors} errors {bad or ''}".strip()
        w = f"{workers}w" if workers else "- "
        lat = result.latency
        log(
            f"{scenario_key:<16} {w} c={clients:<3} {row.rate:8.0f} {unit:<7} p50 {lat.p50:6.2f} ms"
            f"  p99 {lat.p99:6.2f} ms  gen {100 * cpu.share(cpu.gen):3.0f}%  {row.note}"
        )
        return row

    def trivial(self) -> None:
        scenario = Scenario("get", path="/trivial")
        for workers, server in self.trivial_servers.items():
            if not self.plan.quick:
                self.load.run(scenario, port=server.port, connections=max(self.plan.clients), seconds=1)
            for clients in self.plan.clients:
                row = self._http_run(
                    "trivial",
                    scenario,
                    server=server,
                    clients=clients,
                    workers=workers,
                    app=server.processes,
                    section="ceiling",
                )
                self.out.rows.append(row)
            server.stop()  # done with it: nothing idle stays around

    def _direct_requests(self) -> Path | None:
        """Signed open-session requests, as the service would send them, one per player."""
        try:
            from partner_gateway.bidpaw import signing
            from partner_gateway.bidpaw.client import OPEN_SESSION_PATH, encode_query, open_session_params
        except ImportError as exc:
            self.out.note(f"BidPaw: cannot sign direct calls ({exc}); direct rows skipped")
            return None
        lines = []
        for i in range(1, 2001):
            params = open_session_params(
                client_id=self.keys.bidpaw_client_id,
                user_id=f"player-{i}",
                nick=None,
                game_id=servers.BIDPAW_GAME_ID,
            )
            sign = signing.sign(params=params, secret=self.keys.bidpaw_secret)
            lines.append(f"{OPEN_SESSION_PATH}?{encode_query(params)}\t{sign}")
        path = self.workdir / "direct.tsv"
        path.write_text("\n".join(lines) + "\n")
        return path

    def direct(self) -> None:
        if self.sandbox is None or self.direct_file is None:
            return
        scenario = Scenario("direct", data_file=self.direct_file)
        if not self.plan.quick:
            self.load.run(scenario, port=self.sandbox.port, connections=max(self.plan.clients), seconds=1)
        for clients in (UNLOADED, *self.plan.clients):
            row = self._http_run(
                "direct",
                scenario,
                server=self.sandbox,
                clients=clients,
                workers=None,
                app=self.sandbox.processes,
                section="ceiling",
            )
            self.out.rows.append(row)

    # the service ---------------------------------------------------------------------------
    def _app_processes(self, server: Server, *, with_sandbox: bool) -> Callable[[], list[psutil.Process]]:
        def processes() -> list[psutil.Process]:
            found: list[psutil.Process] = server.processes()
            if with_sandbox and self.sandbox is not None:
                found += self.sandbox.processes()
            return found

        return processes

    def _bidpaw_ready(self, server: Server) -> bool:
        if self.sandbox is None or "bidpaw" in self.plan.skip:
            return False
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.request("GET", "/openapi.json")
            paths = json.loads(conn.getresponse().read()).get("paths", {})
            if "/bidpaw/open-session" not in paths:
                self.out.note("BidPaw: the service has no /bidpaw/open-session route yet; proxy rows skipped")
                return False
            headers = {"Authorization": f"Bearer {self.keys.gateway_key}", "X-User-Id": "player-1"}
            conn.request("GET", "/bidpaw/open-session", headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                self.out.note(f"BidPaw: /bidpaw/open-session answered {response.status} {body[:160]!r}")
                return False
            return True
        finally:
            conn.close()

    def _replay_requests(self, server: Server) -> Path:
        """Keys already answered: /betlink/session, then /betlink/authenticate once per key."""
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        lines = []
        try:
            for i in range(self.plan.replay_keys):
                headers = {"Authorization": f"Bearer {self.keys.gateway_key}", "X-User-Id": f"player-{i + 1}"}
                conn.request("POST", "/betlink/session", headers=headers)
                response = conn.getresponse()
                launched = json.loads(response.read())
                if response.status != 201:
                    raise BenchError(f"/betlink/session answered {response.status}: {launched}")
                key = str(uuid.uuid4())
                body = json.dumps(
                    {
                        "requestId": str(uuid.uuid4()),
                        "userId": launched["userId"],
                        "operatorId": servers.OPERATOR_ID,
                        "launchToken": launched["launchToken"],
                        "authRequestedTimestamp": str(int(time.time() * 1000)),
                    },
                    separators=(",", ":"),
                )
                auth = {
                    "X-API-Key": self.keys.betlink_key,
                    "X-Idempotency-Key": key,
                    "Content-Type": "application/json",
                }
                conn.request("POST", "/betlink/authenticate", body=body.encode(), headers=auth)
                response = conn.getresponse()
                answer = response.read()
                if response.status != 200:
                    raise BenchError(f"/betlink/authenticate answered {response.status}: {answer[:200]!r}")
                lines.append(f"{key}\t{body}")
        finally:
            conn.close()
        path = self.workdir / "replay.tsv"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _warm(self, server: Server, *, bidpaw: bool) -> None:
        """Fill the pool and the prepared-statement caches before measuring."""
        top = max(self.plan.clients)
        self.load.run(Scenario("pair"), port=server.port, connections=top, seconds=self.plan.warmup)
        if bidpaw and not self.plan.quick:
            self.load.run(Scenario("proxy"), port=server.port, connections=top, seconds=self.plan.warmup)

    def floor(self, workers: int) -> None:
        """The hand-written floor at this worker count, just before the service: ratios from
        neighbouring runs of one benchmark."""
        server = self.floors.get(workers)
        if server is None:
            return
        log(f"hand-written floor: {workers} worker(s), pid {server.pid}; warming up")
        top = max(self.plan.clients)
        self.load.run(Scenario("pair"), port=server.port, connections=top, seconds=self.plan.warmup)
        for key, scenario, unit in (
            ("floor-session", Scenario("session"), "rps"),
            ("floor-pair", Scenario("pair"), "pairs/s"),
        ):
            for clients in self.plan.clients:
                row = self._http_run(
                    key,
                    scenario,
                    server=server,
                    clients=clients,
                    workers=workers,
                    app=server.processes,
                    section="ceiling",
                    unit=unit,
                )
                self.out.rows.append(row)
        server.stop()

    def service_matrix(self) -> None:
        for workers, server in self.services.items():
            self.floor(workers)
            bidpaw = self._bidpaw_ready(server)
            log(f"service: {workers} worker(s), pid {server.pid}; warming up")
            self._warm(server, bidpaw=bidpaw)
            if self.replay_file is None:
                self.replay_file = self._replay_requests(server)
            app = self._app_processes(server, with_sandbox=False)
            runs: list[tuple[str, Scenario, str]] = [
                ("session", Scenario("session"), "rps"),
                ("pair", Scenario("pair"), "pairs/s"),
                ("replay", Scenario("replay", data_file=self.replay_file), "rps"),
            ]
            if self.plan.healthz:
                runs.append(("healthz", Scenario("get", path="/healthz"), "rps"))
            for key, scenario, unit in runs:
                for clients in self.plan.clients:
                    row = self._http_run(
                        key, scenario, server=server, clients=clients, workers=workers, app=app, unit=unit
                    )
                    self.out.rows.append(row)
            if bidpaw:
                with_sandbox = self._app_processes(server, with_sandbox=True)
                for clients in (UNLOADED, *self.plan.clients):
                    row = self._http_run(
                        "proxy",
                        Scenario("proxy"),
                        server=server,
                        clients=clients,
                        workers=workers,
                        app=with_sandbox,
                    )
                    self.out.rows.append(row)
            server.stop()

    def profile(self, profiler: Profiler, *, scenario: str) -> None:
        """One scenario (the pair by default) at the highest connection count against one worker."""
        clients = max(self.plan.clients)
        seconds = max(self.plan.seconds, 5.0)
        load = {
            "pair": Scenario("pair"),
            "session": Scenario("session"),
            "replay": Scenario("replay", data_file=self.replay_file),
            "open-session": Scenario("proxy"),
        }[scenario]
        server = servers.launch_service(
            1, env=self.service_env(), workdir=self.workdir, wrap=profiler.wrap(), tag="-profile"
        )
        try:
            server.ready()
            if scenario == "replay" and self.replay_file is None:
                load = Scenario("replay", data_file=self._replay_requests(server))
            self._warm(server, bidpaw=scenario == "open-session")
            spy = profiler.attach(server.pid, seconds=seconds, log=self.workdir / "py-spy.log")
            self.load.run(load, port=server.port, connections=clients, seconds=seconds)
            if spy is not None:
                spy.wait(timeout=seconds + 60)
        finally:
            server.stop()  # a wrapped service writes its profile on the way out (SIGTERM → SystemExit)
        self.out.profile = summarize(profiler)
        self.out.profile_file = profiler.output
        log(f"profile ({profiler.name}) written to {profiler.output}")

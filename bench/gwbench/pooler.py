"""The PgBouncer rows: two service processes through PgBouncer beside the same two direct.

PgBouncer runs the reference deploy/pgbouncer/pgbouncer.ini (only its addresses, paths and the
userlist replaced) in front of the run's embedded PostgreSQL. Three configurations of the same
`serve --workers 2`, one after the other, each on the session and pair scenarios:

- direct: DB_POOLER=none (timeouts as start-up parameters, asyncpg's statement cache on);
- direct, pooler settings: DB_POOLER=pgbouncer straight to PostgreSQL (role-default timeouts,
  statement cache off), so the cost of the settings is told apart from the cost of the hop;
- PgBouncer: DB_POOLER=pgbouncer through PgBouncer (its CPU counted with the app's).

Then, in-process and without HTTP, the ways a pooler-safe session can carry its timeouts
(`bounds_options`): what each costs on the service's own statements through PgBouncer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from gwbench import servers
from gwbench.bench import Bench, log
from gwbench.load import Scenario
from gwbench.measure import Row
from gwbench.procs import BenchError, free_port

REFERENCE = Path(__file__).resolve().parents[2] / "deploy" / "pgbouncer" / "pgbouncer.ini"
CONFIGS = (
    ("direct", "DB_POOLER=none, straight to PostgreSQL"),
    ("settings", "DB_POOLER=pgbouncer, straight to PostgreSQL"),
    ("pgbouncer", "DB_POOLER=pgbouncer, through PgBouncer"),
)
SCENARIOS = (("session", "POST /betlink/session", "rps"), ("pair", "session → authenticate pair", "pairs/s"))
WORKERS = 2
OPTION_CONCURRENCY = 8


@contextlib.contextmanager
def pgbouncer(socket_dir: Path, *, userlist: str, workdir: Path) -> Iterator[int]:
    """PgBouncer on the reference ini in front of `socket_dir`'s `postgres` database; its port."""
    if shutil.which("pgbouncer") is None:
        raise BenchError("pgbouncer is not installed (apt-get install pgbouncer)")
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-", dir=workdir))
    os.chmod(workdir, 0o755)
    values = {
        "gateway": f"host={socket_dir} port=5432 dbname=postgres",
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "auth_file": str(directory / "userlist.txt"),
    }
    text = REFERENCE.read_text()
    for key, value in values.items():
        text, count = re.subn(rf"^{re.escape(key)} = .*$", f"{key} = {value}", text, flags=re.MULTILINE)
        if count != 1:
            raise BenchError(f"{REFERENCE.name}: {count} lines set {key}")
    (directory / "pgbouncer.ini").write_text(text)
    (directory / "userlist.txt").write_text(userlist)
    owner: dict[str, Any] = {}
    if os.geteuid() == 0:  # PgBouncer refuses root: run it as the socket's owner
        stat = os.stat(socket_dir)
        owner = {"user": stat.st_uid, "group": stat.st_gid, "extra_groups": []}
        for path in (directory, *directory.iterdir()):
            os.chown(path, stat.st_uid, stat.st_gid)
    with (directory / "pgbouncer.log").open("wb") as out:
        proc = subprocess.Popen(
            ["pgbouncer", str(directory / "pgbouncer.ini")], stdout=out, stderr=subprocess.STDOUT, **owner
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(
                        "pgbouncer did not start: " + (directory / "pgbouncer.log").read_text()
                    ) from None
                time.sleep(0.05)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _userlist(bench: Bench, password: str) -> str:
    bench.pg.psql(f"ALTER ROLE postgres PASSWORD '{password}'")
    secret = bench.pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
    return f'"postgres" "{secret}"\n'


def _migrate(env: dict[str, str]) -> None:
    """`partner-gateway migrate` with DB_POOLER=pgbouncer: writes the role's timeouts."""
    done = subprocess.run(
        [sys.executable, "-m", "partner_gateway", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise BenchError(f"migrate through PgBouncer failed: {done.stderr.strip()[-300:]}")


def phase(bench: Bench) -> list[str]:
    """Measure the three configurations and the bound options; the report's lines."""
    password = secrets.token_urlsafe(16)
    userlist = _userlist(bench, password)
    rows: dict[tuple[str, str, int], Row] = {}
    with pgbouncer(bench.pg.socket_dir, userlist=userlist, workdir=bench.workdir) as port:
        bounced = f"postgresql+asyncpg://postgres:{password}@127.0.0.1:{port}/gateway"
        base = bench.service_env()
        _migrate({**base, "DATABASE_URL": bounced, "DB_POOLER": "pgbouncer"})
        urls = {"direct": base["DATABASE_URL"], "settings": base["DATABASE_URL"], "pgbouncer": bounced}
        bouncer = _pgbouncer_processes(port)
        for config, label in CONFIGS:
            pooler = "none" if config == "direct" else "pgbouncer"
            env = {**base, "DATABASE_URL": urls[config], "DB_POOLER": pooler}
            server = servers.launch_service(WORKERS, env=env, workdir=bench.workdir, tag=f"-{config}")
            try:
                server.ready()
                log(f"pgbouncer phase: {label}; warming up")
                bench._warm(server, bidpaw=False)
                extra = bouncer if config == "pgbouncer" else _nothing

                def app(
                    server: Any = server, extra: Callable[[], list[psutil.Process]] = extra
                ) -> list[psutil.Process]:
                    found: list[psutil.Process] = server.processes() + extra()
                    return found

                for scenario, _title, unit in SCENARIOS:
                    for clients in bench.plan.clients:
                        rows[(config, scenario, clients)] = bench._http_run(
                            scenario,
                            Scenario(scenario),
                            server=server,
                            clients=clients,
                            workers=WORKERS,
                            app=app,
                            section="pooler",
                            unit=unit,
                        )
            finally:
                server.stop()
        options = asyncio.run(bounds_options(bounced, seconds=max(2.5, bench.plan.seconds)))
    bench.out.rows.extend(rows.values())
    return report(rows, options, clients=bench.plan.clients)


def _nothing() -> list[psutil.Process]:
    return []


def _pgbouncer_processes(port: int) -> Callable[[], list[psutil.Process]]:
    def found() -> list[psutil.Process]:
        result = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["name"] == "pgbouncer":
                    result.append(proc)
        return result

    return found


async def bounds_options(url: str, *, seconds: float) -> dict[str, float]:
    """Operations per second, through PgBouncer, of each way to carry the timeouts.

    The single statement is /betlink/session's insert; the transaction is that insert, the
    authenticate claim and the exchange (three statements, as a replay-free authenticate).
    """
    from partner_gateway import store
    from partner_gateway.config import Settings
    from partner_gateway.db import Statement, connection_mode, create_database, session_bounds, utc_now

    settings = Settings(
        _env_file=None, database_url=url, db_pooler="pgbouncer", db_pool_size=OPTION_CONCURRENCY
    )
    database = create_database(settings, url)  # each BEGIN sets the timeouts too (SET LOCAL)
    mode = connection_mode(settings)
    bare = create_database(settings, url, mode=replace(mode, begin="BEGIN ISOLATION LEVEL READ COMMITTED"))
    bounds = session_bounds(settings)
    set_local = Statement(
        "set_local",
        "SELECT " + ", ".join(f"set_config('{name}', '{value}', true)" for name, value in bounds.items()),
    )

    async def statement(conn: Any) -> None:
        now = utc_now()
        await store.create_session(
            conn,
            user_id="bench-options",
            token_hash=uuid.uuid4().bytes,
            expires_at=now + timedelta(hours=1),
            now=now,
        )

    async def transaction(conn: Any) -> None:
        now, token, key = utc_now(), uuid.uuid4().bytes, uuid.uuid4()
        await store.create_session(
            conn, user_id="bench-options", token_hash=token, expires_at=now + timedelta(hours=1), now=now
        )
        claim = await store.claim_key(
            conn,
            key=key,
            fingerprint=b"f",
            token_hash=token,
            now=now,
            expires_at=now + timedelta(hours=1),
        )
        assert isinstance(claim, store.Claim)
        assert claim.session is not None
        await store.record_exchange(
            conn,
            session_id=claim.session.id,
            token_hash=uuid.uuid4().bytes,
            expires_at=now,
            key=key,
            response=b"r",
        )

    def with_set_local(work: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def run(conn: Any) -> None:
            await conn.execute(set_local)
            await work(conn)

        return run

    async def rate(opened: Callable[[], Any], work: Callable[[Any], Any], seconds: float) -> float:
        done = 0
        stop = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop:
                async with opened() as conn:
                    await work(conn)
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(OPTION_CONCURRENCY)))
        return done / (time.monotonic() - started)

    try:
        await rate(database.statement, statement, 1.0)  # warm the pool
        return await interleaved(
            {
                "statement: autocommit, role defaults": partial(rate, database.statement, statement),
                "statement: in a transaction with set_config(…, true)": partial(
                    rate, bare.transaction, with_set_local(statement)
                ),
                "statement: in the service's transaction (BEGIN; SET LOCAL …)": partial(
                    rate, database.transaction, statement
                ),
                "transaction: role defaults (bare BEGIN)": partial(rate, bare.transaction, transaction),
                "transaction: + set_config(…, true)": partial(
                    rate, bare.transaction, with_set_local(transaction)
                ),
                "transaction: BEGIN; SET LOCAL … (the service's)": partial(
                    rate, database.transaction, transaction
                ),
            },
            seconds=seconds,
        ) | await _begin_options(url, bounds, seconds=seconds)
    finally:
        await database.close()
        await bare.close()


ROUNDS = 5


async def interleaved(
    runs: Mapping[str, Callable[[float], Awaitable[float]]], *, seconds: float
) -> dict[str, float]:
    """Each run's median rate over ROUNDS rounds, the runs taking turns: a machine whose load
    drifts during the measurement moves every run's figure alike."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            rates[name].append(await run(seconds / ROUNDS))
    return {name: statistics.median(values) for name, values in rates.items()}


async def _begin_options(url: str, bounds: dict[str, str], *, seconds: float) -> dict[str, float]:
    """On bare asyncpg: BEGIN alone, or BEGIN and SET LOCAL sent together as one simple query
    (several statements, one round trip), around one parametrised statement and COMMIT."""
    import asyncpg

    from partner_gateway.db import APPLICATION_NAME

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    set_local = "".join(f"; SET LOCAL {name} = '{value}'" for name, value in bounds.items())
    begins = {
        "asyncpg transaction: BEGIN (role defaults)": "BEGIN ISOLATION LEVEL READ COMMITTED",
        "asyncpg transaction: BEGIN; SET LOCAL … in one round trip": "BEGIN" + set_local,
    }
    conns = [
        await asyncpg.connect(
            dsn, statement_cache_size=0, server_settings={"application_name": APPLICATION_NAME}
        )
        for _ in range(OPTION_CONCURRENCY)
    ]
    try:
        runs = {name: partial(_begin_rate, conns, begin) for name, begin in begins.items()}
        return await interleaved(runs, seconds=seconds)
    finally:
        for conn in conns:
            await conn.close()


async def _begin_rate(conns: list[Any], begin: str, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def worker(conn: Any) -> None:
        nonlocal done
        while time.monotonic() < stop:
            await conn.execute(begin)
            await conn.fetchval("SELECT $1::int", done)
            await conn.execute("COMMIT")
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(conn) for conn in conns))
    return done / (time.monotonic() - started)


def report(
    rows: dict[tuple[str, str, int], Row], options: dict[str, float], *, clients: tuple[int, ...]
) -> list[str]:
    """Rates move with whatever else the machine runs; CPU per unit much less so."""
    lines = [
        f"PGBOUNCER ({WORKERS} worker processes each; deploy/pgbouncer/pgbouncer.ini;"
        " app CPU includes PgBouncer's)"
    ]
    head = (
        f"{'what':<30} {'conns':>5} {'configuration':<44} {'rate':>12} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'err':>4} {'app ms':>6} {'pg ms':>6} {'CPU vs direct':>13}"
    )
    lines += [head, "─" * len(head)]
    for scenario, title, unit in SCENARIOS:
        for count in clients:
            direct = rows.get(("direct", scenario, count))
            for config, label in CONFIGS:
                row = rows.get((config, scenario, count))
                if row is not None:
                    lines.append(f"{title:<30} {count:>5} {label:<44} {_cells(row, unit, direct)}")
    lines.append("  app ms, pg ms: CPU per unit of the service (with PgBouncer's) and of PostgreSQL")
    lines += [
        "",
        f"HOW THE TIMEOUTS TRAVEL through PgBouncer (in-process, {OPTION_CONCURRENCY} tasks, ops/s)",
    ]
    for name, value in options.items():
        lines.append(f"  {name:<56} {value:8,.0f}")
    return lines


def _cpu_per_unit(row: Row) -> tuple[float, float]:
    if row.cpu is None or not row.units:
        return 0.0, 0.0
    return 1000 * row.cpu.app / row.units, 1000 * row.cpu.pg / row.units


def _cells(row: Row, unit: str, direct: Row | None) -> str:
    lat = row.latency
    app, pg = _cpu_per_unit(row)
    text = (
        f"{row.rate:>6,.0f} {unit:<5} {lat.p50 if lat else 0:7.1f} {lat.p99 if lat else 0:7.1f}"
        f" {row.errors:>4} {app:6.2f} {pg:6.2f}"
    )
    base = sum(_cpu_per_unit(direct), 0.0) if direct is not None and direct is not row else 0.0
    if base:
        text += f" {100 * ((app + pg) / base - 1):+12.0f}%"
    return text

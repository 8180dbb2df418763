"""partner-gateway's benchmark: the service measured against this machine's own ceilings.

    python3 scripts/dev.py bench [--quick] [--profile] [options]

On the embedded PostgreSQL (a temporary DATA_DIR) and loopback only, it measures pgbench with
the service's own SQL, a trivial FastAPI endpoint and the BidPaw sandbox (the ceilings), then
the service at each connection count and worker count, and prints rates, latencies, ratios,
the targets' verdicts and what each request sends to PostgreSQL. wrk is the load generator when
installed (`apt-get install wrk`); otherwise a Python asyncio generator stands in.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import psutil
from gwbench import pooler, report, sql
from gwbench.bench import Bench, Outcome, Plan, log
from gwbench.load import wrk_path
from gwbench.measure import CPUS
from gwbench.pg import embedded
from gwbench.procs import BenchError
from gwbench.profiling import INSTALL_HINT, Profiler, choose

BENCH_DIR = Path(__file__).resolve().parent
PHASES = ("pgbench", "trivial", "floor", "bidpaw", "service", "audit", "pgbouncer")


def _list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 s runs, a smaller matrix: under a minute")
    parser.add_argument("--seconds", type=float, help="measured seconds per run (default 5; --quick 1)")
    parser.add_argument("--clients", type=_list, default=(16, 64), help="connection counts (default 16,64)")
    parser.add_argument("--workers", type=_list, default=(1, 2), help="worker processes (default 1,2)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--profile", action="store_true", help="profile the pair path (saved under --results)"
    )
    parser.add_argument("--profiler", choices=["auto", "py-spy", "pyinstrument", "cprofile"], default="auto")
    parser.add_argument(
        "--profile-scenario",
        choices=["pair", "session", "replay", "open-session"],
        default="pair",
        help="what --profile loads the service with (default: the pair)",
    )
    parser.add_argument("--skip", default="", help=f"comma-separated phases to skip: {', '.join(PHASES)}")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra service setting, e.g. DB_POOL_SIZE=30",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 3 when a target is missed or could not be measured (for a pipeline)",
    )
    parser.add_argument("--results", type=Path, help="where to save (default bench/results/<time>/)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary directory (logs)")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so every server is stopped and the embedded PostgreSQL with them


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    skip = frozenset(part.strip() for part in args.skip.split(",") if part.strip())
    if unknown := skip - set(PHASES):
        raise SystemExit(f"bench: unknown phase(s) for --skip: {', '.join(sorted(unknown))}")
    if bad := [item for item in args.env if "=" not in item]:
        raise SystemExit(f"bench: --env wants NAME=VALUE, not {bad[0]!r}")
    overrides = dict(item.split("=", 1) for item in args.env)
    plan = Plan(
        seconds=args.seconds or (1.0 if args.quick else 5.0),
        warmup=1.0,
        clients=args.clients,
        workers=args.workers,
        seeded_sessions=5_000 if args.quick else 50_000,
        replay_keys=32 if args.quick else 128,
        pgbench_pair=not args.quick,
        healthz=not args.quick,
        quick=args.quick,
        skip=skip,
        service_env=overrides,
    )
    generator = args.loadgen
    if generator == "auto":
        generator = "wrk" if wrk_path() else "python"
    if generator == "wrk" and not wrk_path():
        raise SystemExit("bench: wrk is not installed (apt-get install wrk), or use --loadgen python")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = None if args.no_save else (args.results or BENCH_DIR / "results" / stamp)
    profiler = None
    if args.profile:
        name = choose(args.profiler)
        suffix = {"py-spy": "collapsed.txt", "pyinstrument": "pyinstrument.txt", "cprofile": "prof"}[name]
        target_dir = results or Path(tempfile.gettempdir())  # --no-save: next to the other temp files
        target_dir.mkdir(parents=True, exist_ok=True)
        prefix = "" if results else f"gwbench-{stamp}-"
        profiler = Profiler(
            name, (target_dir / f"{prefix}profile-{args.profile_scenario}.{suffix}").resolve()
        )

    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="gwbench-"))
    outcome = Outcome()
    started = time.monotonic()
    facts = _facts(plan, generator, profiler)
    try:
        with contextlib.ExitStack() as stack:
            bench = Bench(plan, workdir=workdir, generator=generator, outcome=outcome)
            facts["load generator"] = bench.load.label
            bench.launch_early(stack)
            pg = stack.enter_context(embedded(workdir / "data"))
            bench.launch_services(pg, stack)
            facts["database"] = f"embedded PostgreSQL {pg.version()} over a unix socket, temporary DATA_DIR"
            log(f"embedded PostgreSQL {pg.version()} up; load generator: {bench.load.label}")
            if "pgbench" not in skip:
                pg.seed(sessions=plan.seeded_sessions)
            bench.ready()
            bench.audit()
            if "pgbench" not in skip:
                bench.pgbench()
            bench.trivial()
            bench.direct()
            bench.service_matrix()
            if profiler is not None:
                bench.profile(profiler, scenario=args.profile_scenario)
            pooled = _pooler_phase(bench, skip)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        print(f"bench: logs kept in {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bench: interrupted; logs kept in {workdir}", file=sys.stderr)
        return 130
    facts["elapsed"] = f"{time.monotonic() - started:.0f} s"
    text = "\n".join([_render(plan, outcome, facts, profiled=args.profile_scenario), "", *pooled])
    print(text)
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        (results / "report.txt").write_text(text + "\n")
        (results / "rows.json").write_text(report.to_json(outcome.rows) + "\n")
        print(f"\nsaved in {results}")
    if args.keep_temp:
        print(f"temporary files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.check:
        missed = report.missed(outcome.rows, plan.clients, plan.workers)
        for name in missed:
            print(f"bench --check: target missed: {name}", file=sys.stderr)
        return 3 if missed else 0
    return 0


def _pooler_phase(bench: Bench, skip: frozenset[str]) -> list[str]:
    """The PgBouncer rows (gwbench/pooler.py), last: its migrate writes the role's timeouts."""
    if "pgbouncer" in skip:
        return []
    try:
        return pooler.phase(bench)
    except BenchError as exc:
        return [f"PGBOUNCER: skipped: {exc}"]


def _idle_before() -> str:
    """How busy the machine is before the benchmark starts (other work skews every figure)."""
    busy = psutil.cpu_percent(interval=0.5)
    return f"{busy:.0f} % of the CPU busy in the half second before the start" + (
        " (not quiet: figures will be low)" if busy > 10 else ""
    )


def _facts(plan: Plan, generator: str, profiler: Profiler | None) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": f"{CPUS} CPUs ({cpu}), {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}",
        "machine load": _idle_before(),
        "database": "embedded PostgreSQL",
        "load generator": generator,
        "runs": f"{plan.seconds:g} s each; connections {plan.clients}; workers {plan.workers}",
        "service settings": "BETLINK_LAUNCH_TOKEN_TTL_SECONDS=3600 (tokens outlive a run), defaults otherwise"
        + (f"; {plan.service_env}" if plan.service_env else ""),
        "profiler": profiler.name if profiler else f"off (--profile; {INSTALL_HINT})",
    }


def _render(plan: Plan, outcome: Outcome, facts: dict[str, str], *, profiled: str) -> str:
    lines = ["partner-gateway benchmark", *report.header(facts)]
    for what, how in outcome.launches.items():
        lines.append(f"{what}: {how}")
    lines += ["", *report.table(outcome.rows), *report.busy_machine(outcome.rows), "", *report.legend(), ""]
    lines += ["RATIOS", *report.ratios(outcome.rows, plan.clients, plan.workers), ""]
    lines += ["TARGETS", *report.targets(outcome.rows, plan.clients, plan.workers)]
    if outcome.audit is not None:
        lines += ["", "ROUND TRIPS TO POSTGRESQL PER REQUEST (log_statement = all, one request each)"]
        lines += report.round_trips(outcome.audit)
    if outcome.statements:
        lines += ["", "pgbench runs (BEGIN/COMMIT around authenticate; source: audit = sent by the service)"]
        lines += [f"  {line}" for line in sql.describe(outcome.statements)]
    if outcome.notes:
        lines += ["", "NOTES", *[f"- {note}" for note in outcome.notes]]
    if outcome.profile:
        lines += [
            "",
            f"PROFILE of the pair at {max(plan.clients)} connections, 1 worker: {outcome.profile_file}",
        ]
        lines.append(outcome.profile)
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))

"""The printed report: the table, the TARGETS block (what `bench --check` fails on), app CPU."""

from __future__ import annotations

from collections.abc import Iterable

from gwbench.scenarios import SCENARIOS, TARGETS, Target
from gwbench.wrk import Row

TITLES = {s.name: s.title for s in SCENARIOS} | {"pgbench-session": "pgbench: the session statement"}
TITLES |= {"pgbench-pair": "pgbench: session stmt + auth txn"}
REQUESTS = {s.name: s.requests for s in SCENARIOS}


def title(name: str) -> str:
    base, _, via = name.partition("@")  # "pair@pgbouncer": the pair with the service behind PgBouncer
    return TITLES.get(base, base) + (f" [{via}]" if via else "")


def table(rows: Iterable[Row]) -> list[str]:
    head = f"{'what':<58} {'w':>2} {'conns':>5} {'rate':>15} {'p50 ms':>7} {'p99 ms':>7} {'err':>5}"
    head += f" {'app ms':>7} {'pg ms':>6} {'gen ms':>6} {'load':>5}"
    lines = [head, "─" * len(head)]
    for r in rows:
        p99 = f"{r.p99:7.2f}" if r.p99 else f"{'avg':>7}"
        rate = f"{r.rate:,.0f}"
        text = f"{title(r.scenario):<58} {r.workers or '-':>2} {r.clients:>5} {rate:>9} {unit(r):<5}"
        text += (
            f" {r.p50:7.2f} {p99} {r.errors:>5} {r.app_ms:7.3f} {r.pg_ms:6.3f} {r.gen_ms:6.3f} {r.load:5.1f}"
        )
        lines.append(text + (f"  ! {r.note}" if r.note else ""))
    return lines


def unit(row: Row) -> str:
    if row.scenario.startswith("pgbench"):
        return "tps"
    return next((s.unit for s in SCENARIOS if s.name == row.scenario.split("@")[0]), "rps")


def _find(rows: list[Row], scenario: str, clients: int, workers: int | None) -> Row | None:
    """The row at these workers, or the one without workers (a server that has no worker count)."""
    found = [
        r for r in rows if r.scenario == scenario and r.clients == clients and r.workers in (workers, None)
    ]
    return found[0] if found else None


def cells(target: Target, rows: list[Row]) -> dict[int, tuple[float, bool]]:
    """Per worker count measured: the target's value and whether it is met."""
    workers = sorted({r.workers for r in rows if r.scenario in target.scenarios and r.workers})
    clients = target.clients or max((r.clients for r in rows), default=0)
    found: dict[int, tuple[float, bool]] = {}
    for w in workers:
        if target.kind == "tail":
            ratios = [
                r.p99 / r.p50 for s in target.scenarios if (r := _find(rows, s, clients, w)) and r.p50 > 0
            ]
            if ratios:
                found[w] = (max(ratios), max(ratios) <= target.limit)
            continue
        row, other = _find(rows, target.scenarios[0], clients, w), _find(rows, target.other, clients, w)
        if row is None or other is None or not other.rate:
            continue
        if target.kind == "share":
            found[w] = (row.rate / other.rate, row.rate / other.rate >= target.limit and row.valid)
        else:
            found[w] = (row.p50 - other.p50, row.p50 - other.p50 <= target.limit and row.valid)
    return found


def _value(kind: str, value: float) -> str:
    return {"share": f"{100 * value:.0f} %", "added": f"{value:+.2f} ms", "tail": f"{value:.1f}x"}[kind]


def label(target: Target) -> str:
    where = {0: "the most connections measured", 1: "1 connection"}.get(target.clients)
    return f"{target.name}, {where or f'{target.clients} connections'}"


def targets(rows: list[Row], chosen: Iterable[Target] = TARGETS) -> list[str]:
    lines = []
    for target in chosen:
        found = cells(target, rows)
        if not found:
            lines.append(f"[n/a ] {label(target)}: not measured")
            continue
        missed = [w for w, (_, ok) in found.items() if not ok]
        verdict = "FAIL" if missed else "PASS"
        lines.append(
            f"[{verdict}] {label(target)}: "
            + ", ".join(
                f"{w}w {_value(target.kind, v)} {'ok' if ok else 'MISS'}" for w, (v, ok) in found.items()
            )
        )
    return lines


def missed(rows: list[Row], chosen: Iterable[Target] = TARGETS) -> list[str]:
    """The targets `bench --check` fails on: missed, or not measured at all."""
    return [label(t) for t in chosen if not (cells(t, rows) and all(ok for _, ok in cells(t, rows).values()))]


def app_cpu(rows: list[Row], clients: int = 16) -> list[str]:
    """The served processes' CPU per HTTP request, per scenario: the figure to trend across versions."""
    by_workers: dict[int, list[str]] = {}
    for r in rows:
        if r.workers and r.clients == clients and r.units:
            per = r.app_ms / REQUESTS.get(r.scenario.split("@")[0], 1)
            by_workers.setdefault(r.workers, []).append(f"{r.scenario} {per:.2f}")
    return [
        f"[INFO] app CPU ms per request, {clients} connection(s), {w}w: " + ", ".join(c)
        for w, c in sorted(by_workers.items())
    ]


def beside(rows: list[Row], scenario: str, other: str, clients: int) -> list[str]:
    """The app CPU per request of `scenario` beside `other`'s, per worker count, at `clients`."""
    lines = []
    for w in sorted({r.workers for r in rows if r.workers}):
        mine, theirs = _find(rows, scenario, clients, w), _find(rows, other, clients, w)
        if mine and theirs and mine.units and theirs.units and theirs.app_ms:
            lines.append(
                f"[INFO] app CPU ms per request, {title(scenario)} beside {title(other)}, "
                f"{clients} connection(s), {w}w: {mine.app_ms:.2f} vs {theirs.app_ms:.2f} "
                f"({mine.app_ms / theirs.app_ms:.1f}x)"
            )
    return lines


def against(rows: list[Row], via: str) -> list[str]:
    """CPU per unit (app + PostgreSQL) of the `scenario@via…` rows against the same scenario direct
    (pgbench's: against its `@simple` row, the same protocol straight to PostgreSQL)."""
    lines = []
    for r in rows:
        base, _, how = r.scenario.partition("@")
        direct = _find(rows, base + ("@simple" if base.startswith("pgbench") else ""), r.clients, r.workers)
        if how.startswith(via) and direct is not None and direct.app_ms + direct.pg_ms > 0:
            change = (r.app_ms + r.pg_ms) / (direct.app_ms + direct.pg_ms) - 1
            where = f"{r.workers}w/{r.clients}c" if r.workers else f"{r.clients}c"
            lines.append(f"[INFO] {title(r.scenario)}, {where}: CPU per unit {change:+.0%} against direct")
    return lines

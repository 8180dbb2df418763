"""The printed table: ceilings, the service, ratios, targets, round trips."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any

from gwbench.audit import Audit, short
from gwbench.measure import CPUS, Row

TITLES = {
    "pgbench-session": "pgbench: /betlink/session statement",
    "pgbench-auth": "pgbench: /betlink/authenticate transaction",
    "pgbench-pair": "pgbench: session stmt + authenticate txn",
    "trivial": "trivial FastAPI endpoint (uvicorn)",
    "floor-session": "floor: /betlink/session, bare asyncpg",
    "floor-pair": "floor: session → authenticate pair",
    "direct": "BidPaw sandbox, called directly",
    "session": "POST /betlink/session",
    "pair": "session → authenticate pair, fresh keys",
    "replay": "authenticate, same-key replay",
    "healthz": "GET /healthz (service stack, no DB)",
    "proxy": "GET /bidpaw/open-session → sandbox",
}
ORDER = list(TITLES)

# The targets (issue 12): rates against the hand-written floor at RATE_CLIENTS connections, the
# BidPaw overhead unloaded, the tail at the most connections; each at every worker count run.
FLOOR_TARGET = 0.70
RATE_CLIENTS = 16
OVERHEAD_TARGET_MS = 1.0
TAIL_TARGET = 4.0
TAIL_SCENARIOS = ("session", "pair", "replay", "proxy")
CPU_SCENARIOS = ("session", "pair", "replay", "healthz", "proxy")


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _ms(value: float) -> str:
    return f"{value:7.2f}" if value < 100 else f"{value:7.0f}"


def _pct(value: float) -> str:
    return f"{100 * value:3.0f}%"


def table(rows: list[Row]) -> list[str]:
    head = (
        f"{'what':<42} {'w':>2} {'conns':>5} {'rate':>14} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
        f" {'err':>5} │ {'gen':>4} {'app':>4} {'pg':>4} {'oth':>4} │"
        f" {'app ms':>6} {'pg ms':>6} {'xact':>5} {'conn+':>5}"
    )
    lines = [
        f"{'':<42} {'':>2} {'':>5} {'':>14} {'':>7} {'':>7} {'':>7} {'':>5} │ {'CPU share':^19} │"
        f" {'CPU per unit':^13} {'db per unit':^11}",
        head,
        "─" * len(head),
    ]
    for section, label in (("ceiling", "CEILINGS (same run, same machine)"), ("service", "THE SERVICE")):
        lines.append(label)
        chosen = sorted(
            (row for row in rows if row.section == section),
            key=lambda r: (ORDER.index(r.scenario), r.workers or 0, r.clients),
        )
        for row in chosen:
            lines.append(_line(row))
    return lines


def _line(row: Row) -> str:
    lat = row.latency
    rate = f"{_num(row.rate)} {row.unit}"
    text = (
        f"{TITLES[row.scenario]:<42} {row.workers or '-':>2} {row.clients:>5} {rate:>14}"
        f" {_ms(lat.p50) if lat else '':>7} {_ms(lat.p99) if lat else '':>7} {_ms(lat.max) if lat else '':>7}"
        f" {row.errors:>5}"
    )
    cpu = row.cpu
    if cpu is not None:
        per_unit = 1000 / row.units if row.units else 0.0
        text += (
            f" │ {_pct(cpu.share(cpu.gen)):>4} {_pct(cpu.share(cpu.app)):>4} {_pct(cpu.share(cpu.pg)):>4}"
            f" {_pct(cpu.share(cpu.other)):>4} │ {cpu.app * per_unit:6.2f} {cpu.pg * per_unit:6.2f}"
        )
    if row.db is not None and row.units:
        xact = (row.db.commits + row.db.rollbacks) / row.units
        text += f" {xact:5.1f} {row.db.sessions:>5}"
    if row.note:
        text += f"  ! {row.note}"
    return text


def _find(rows: Iterable[Row], scenario: str, clients: int, workers: int | None = None) -> Row | None:
    for row in rows:
        if (
            row.scenario == scenario
            and row.clients == clients
            and (workers is None or row.workers == workers)
        ):
            return row
    return None


@dataclasses.dataclass
class Verdict:
    name: str
    cells: dict[tuple[int, int], tuple[float, bool]]  # (workers, clients) -> (value, passed)
    fmt: Callable[[float], str]
    note: str = ""

    def overall(self) -> tuple[str, str]:
        if not self.cells:
            return "n/a", "not measured"
        missed = sorted(f"{w}w/{c}c" for (w, c), (_value, passed) in self.cells.items() if not passed)
        if not missed:
            return "PASS", "met at every worker count measured"
        return "FAIL", "missed at " + ", ".join(missed)


def _rate_clients(clients: tuple[int, ...]) -> int:
    return RATE_CLIENTS if RATE_CLIENTS in clients else min(clients)


def verdicts(rows: list[Row], clients: tuple[int, ...], workers: tuple[int, ...]) -> list[Verdict]:
    service = [row for row in rows if row.section == "service"]
    at = _rate_clients(clients)
    pair = Verdict(
        f"session → authenticate pair ≥ {FLOOR_TARGET:.0%} of the floor's, {at} connections", {}, _pct_str
    )
    session = Verdict(f"/betlink/session ≥ {FLOOR_TARGET:.0%} of the floor's, {at} connections", {}, _pct_str)
    overhead = Verdict(
        f"BidPaw proxy p50 overhead ≤ {OVERHEAD_TARGET_MS:g} ms (unloaded: 1 connection)", {}, _ms_str
    )
    tail = Verdict(f"p99 ≤ {TAIL_TARGET:g} x p50 at {max(clients)} connections (worst scenario)", {}, _x_str)
    for w in workers:
        for verdict, scenario in ((pair, "pair"), (session, "session")):
            row, floor = _find(service, scenario, at, w), _find(rows, f"floor-{scenario}", at, w)
            if row and floor and floor.rate:
                ratio = row.rate / floor.rate
                verdict.cells[(w, at)] = (ratio, ratio >= FLOOR_TARGET and row.valid)
        proxy, direct = _find(service, "proxy", 1, w), _find(rows, "direct", 1)
        if proxy and direct and proxy.latency and direct.latency:
            extra = proxy.latency.p50 - direct.latency.p50
            overhead.cells[(w, 1)] = (extra, extra <= OVERHEAD_TARGET_MS and proxy.valid)
        worst: tuple[float, str] | None = None
        for scenario in TAIL_SCENARIOS:
            row = _find(service, scenario, max(clients), w)
            if row and row.latency and row.latency.p50 > 0:
                factor = row.latency.p99 / row.latency.p50
                if worst is None or factor > worst[0]:
                    worst = (factor, scenario)
        if worst is not None:
            tail.cells[(w, max(clients))] = (worst[0], worst[0] <= TAIL_TARGET)
            tail.note += f" {w}w worst: {worst[1]};"
            trivial = _find(rows, "trivial", max(clients), w)
            if trivial and trivial.latency and trivial.latency.p50 > 0:
                tail.note += f" trivial endpoint {w}w: {trivial.latency.p99 / trivial.latency.p50:.1f}x;"
    return [pair, session, overhead, tail]


def missed(rows: list[Row], clients: tuple[int, ...], workers: tuple[int, ...]) -> list[str]:
    """The targets `bench --check` fails on: missed, or not measured at all."""
    return [v.name for v in verdicts(rows, clients, workers) if v.overall()[0] != "PASS"]


def _pct_str(value: float) -> str:
    return f"{100 * value:.0f} %"


def _ms_str(value: float) -> str:
    return f"{value:+.2f} ms"


def _x_str(value: float) -> str:
    return f"{value:.1f}x"


def ratios(rows: list[Row], clients: tuple[int, ...], workers: tuple[int, ...]) -> list[str]:
    service = [row for row in rows if row.section == "service"]
    cols = [(w, c) for w in workers for c in clients]
    head = f"{'ratio':<52}" + "".join(f"{f'{w}w/{c}c':>10}" for w, c in cols)
    lines = [head, "─" * len(head)]

    def rate_ratio(label: str, num: str, den: str, *, same_workers: bool) -> None:
        cells = []
        for w, c in cols:
            a = _find(rows, num, c, w)
            b = _find(rows, den, c, w if same_workers else None)
            cells.append(f"{100 * a.rate / b.rate:9.0f}%" if a and b and b.rate else f"{'-':>10}")
        if any(cell.strip() != "-" for cell in cells):
            lines.append(f"{label:<52}" + "".join(cells))

    rate_ratio("/betlink/session ÷ hand-written floor", "session", "floor-session", same_workers=True)
    rate_ratio("pair ÷ hand-written floor", "pair", "floor-pair", same_workers=True)
    rate_ratio(
        "floor session ÷ pgbench session statement", "floor-session", "pgbench-session", same_workers=False
    )
    rate_ratio(
        "floor pair ÷ pgbench session + authenticate", "floor-pair", "pgbench-pair", same_workers=False
    )
    rate_ratio(
        "/betlink/session ÷ pgbench session statement", "session", "pgbench-session", same_workers=False
    )
    rate_ratio("pair ÷ pgbench authenticate transaction", "pair", "pgbench-auth", same_workers=False)
    rate_ratio("pair ÷ pgbench session + authenticate", "pair", "pgbench-pair", same_workers=False)
    rate_ratio("/betlink/session ÷ trivial endpoint", "session", "trivial", same_workers=True)
    rate_ratio("pair ÷ trivial endpoint", "pair", "trivial", same_workers=True)
    rate_ratio("replay ÷ trivial endpoint", "replay", "trivial", same_workers=True)
    rate_ratio("/healthz ÷ trivial endpoint", "healthz", "trivial", same_workers=True)
    rate_ratio("open-session ÷ sandbox direct", "proxy", "direct", same_workers=False)
    for what in ("p50", "p99"):
        cells = []
        for w, c in [(w, c) for w in workers for c in (1, *clients)]:
            proxy, direct = _find(service, "proxy", c, w), _find(rows, "direct", c)
            if proxy and direct and proxy.latency and direct.latency:
                extra = getattr(proxy.latency, what) - getattr(direct.latency, what)
                cells.append(f"{w}w/{c}c {extra:+.2f}")
        if cells:
            lines.append(f"{f'BidPaw proxy {what} overhead, ms':<52}" + "  ".join(cells))
    return lines


def targets(rows: list[Row], clients: tuple[int, ...], workers: tuple[int, ...]) -> list[str]:
    lines = []
    at = _rate_clients(clients)
    budgets = [
        _budget(rows, "pair", at, ("pgbench-pair",), ("pgbench-auth", "pgbench-session")),
        _budget(rows, "session", at, ("pgbench-session",), ()),
        [],
        [],
    ]
    for verdict, budget in zip(verdicts(rows, clients, workers), budgets, strict=True):
        status, why = verdict.overall()
        cells = ", ".join(
            f"{w}w/{c}c {verdict.fmt(value)} {'ok' if passed else 'MISS'}"
            for (w, c), (value, passed) in sorted(verdict.cells.items())
        )
        lines.append(f"[{status}] {verdict.name}: {why}")
        if cells:
            lines.append(f"        {cells}{'  (' + verdict.note.strip(' ;') + ')' if verdict.note else ''}")
        lines += [f"        {line}" for line in budget]
    lines.append(f"[INFO] app CPU per request (ms; a pair is two requests), {at} connections:")
    lines += [f"        {line}" for line in app_cpu(rows, at, workers)]
    return lines


def app_cpu(rows: list[Row], clients: int, workers: tuple[int, ...]) -> list[str]:
    """The served processes' CPU per request, per scenario: the figure to trend across versions."""
    lines = []
    for w in workers:
        cells = []
        for scenario in (*CPU_SCENARIOS, "floor-session", "floor-pair"):
            row = _find(rows, scenario, clients, w)
            if row is not None and row.cpu is not None and row.units:
                per = 1000 * row.cpu.app / row.units / (2 if scenario.endswith("pair") else 1)
                cells.append(f"{scenario} {per:.2f}")
        if cells:
            lines.append(f"{w}w: " + ", ".join(cells))
    return lines


def _pg_ms(row: Row | None) -> float | None:
    if row is None or row.cpu is None or not row.units:
        return None
    return 1000 * row.cpu.pg / row.units


def _budget(
    rows: list[Row], scenario: str, clients: int, pg_alone: tuple[str, ...], pg_sum: tuple[str, ...]
) -> list[str]:
    """What the target leaves the app, per worker count: the machine's CPU per unit at the target
    rate, less what PostgreSQL needs for the same SQL under pgbench and what the load generator
    took; beside it what the floor's app spent."""
    lines = []
    pg = _pg_ms(_find(rows, pg_alone[0], clients))
    if pg is None and pg_sum:
        parts = [_pg_ms(_find(rows, name, clients)) for name in pg_sum]
        pg = sum(part for part in parts if part is not None) if all(p is not None for p in parts) else None
    # The generator's cost per request where it runs fastest (the trivial endpoint): at low rates
    # its fixed costs would overstate it.
    requests = 2 if scenario == "pair" else 1
    per_request = [
        1000 * r.cpu.gen / r.units for r in rows if r.scenario == "trivial" and r.cpu is not None and r.units
    ]
    for row in rows:
        if row.section != "service" or row.scenario != scenario or row.clients != clients:
            continue
        floor = _find(rows, f"floor-{scenario}", clients, row.workers)
        if (
            floor is None
            or not floor.rate
            or floor.cpu is None
            or row.cpu is None
            or not row.units
            or pg is None
        ):
            continue
        rate = FLOOR_TARGET * floor.rate
        total = 1000 * CPUS / rate
        gen = requests * min(per_request) if per_request else 1000 * row.cpu.gen / row.units
        app = 1000 * row.cpu.app / row.units
        floor_app = 1000 * floor.cpu.app / floor.units if floor.units else 0.0
        lines.append(
            f"{row.workers}w budget: at {rate:,.0f} {row.unit} the {CPUS} cores give {total:.2f} ms of CPU"
            f" per unit; PostgreSQL needs ≥ {pg:.2f} (pgbench), the generator ≈ {gen:.2f}: the app may spend"
            f" ≈ {total - pg - gen:.2f} ms; it spends {app:.2f}, the floor {floor_app:.2f}"
        )
    return lines


def round_trips(audit: Audit) -> list[str]:
    lines = []
    for kind, statements in audit.statements.items():
        lines.append(f"{kind}: {len(statements)} round trips")
        lines += [f"    {short(sql)}" for sql in statements]
    lines += [f"! {mismatch}" for mismatch in audit.mismatches]
    return lines


def header(facts: dict[str, str]) -> list[str]:
    return [f"{name}: {value}" for name, value in facts.items()]


def legend() -> list[str]:
    return [
        f"CPU share: of the whole machine ({CPUS} cores = 100 %) during the run: gen = load generator (or",
        "pgbench), app = the served processes (+ the sandbox for open-session rows), pg = the embedded",
        "PostgreSQL, oth = everything else (kernel, other work on the machine: high values mean a busy",
        "machine and lower figures). CPU per unit: ms of app / pg CPU per request, pair or transaction.",
        "db per unit: PostgreSQL transactions (commits + rollbacks) per unit and connections opened",
        "during the run, from pg_stat_database (flushed about once a second: approximate).",
        "Rates count successful units only; err = non-2xx answers and socket errors.",
    ]


def busy_machine(rows: list[Row], threshold: float = 0.15) -> list[str]:
    busy = [row for row in rows if row.cpu is not None and row.cpu.share(row.cpu.other) > threshold]
    if not busy:
        return []
    worst = max(row.cpu.share(row.cpu.other) for row in busy if row.cpu is not None)
    return [
        f"! In {len(busy)} of {len(rows)} runs more than {threshold:.0%} of the machine went to other work"
        f" (up to {worst:.0%}, column oth): rerun on a quiet machine for stable figures."
    ]


def to_json(rows: list[Row]) -> str:
    def encode(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {key: encode(item) for key, item in dataclasses.asdict(value).items()}
        return value

    return json.dumps([encode(row) for row in rows], indent=1, default=str)

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
    "direct": "BidPaw sandbox, called directly",
    "session": "POST /betlink/session",
    "pair": "session → authenticate pair, fresh keys",
    "replay": "authenticate, same-key replay",
    "healthz": "GET /healthz (service stack, no DB)",
    "proxy": "GET /bidpaw/open-session → sandbox",
}
ORDER = list(TITLES)

AUTH_TARGET = 0.50
SESSION_TARGET = 0.60
OVERHEAD_TARGET_MS = 2.0
TAIL_TARGET = 4.0
TAIL_SCENARIOS = ("session", "pair", "replay", "proxy")


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
        by_workers: dict[int, list[bool]] = {}
        for (workers, _clients), (_value, passed) in self.cells.items():
            by_workers.setdefault(workers, []).append(passed)
        good = [w for w, results in sorted(by_workers.items()) if all(results)]
        if good:
            return "PASS", f"met with {good[0]} worker(s) at every connection count"
        return "FAIL", "missed for every worker count"


def verdicts(rows: list[Row], clients: tuple[int, ...], workers: tuple[int, ...]) -> list[Verdict]:
    service = [row for row in rows if row.section == "service"]
    auth = Verdict(f"authenticate pair ≥ {AUTH_TARGET:.0%} of pgbench authenticate TPS", {}, _pct_str)
    session = Verdict(f"/betlink/session ≥ {SESSION_TARGET:.0%} of pgbench session TPS", {}, _pct_str)
    overhead = Verdict(
        f"BidPaw proxy p50 overhead ≤ {OVERHEAD_TARGET_MS:g} ms (unloaded: 1 connection)", {}, _ms_str
    )
    tail = Verdict(f"p99 ≤ {TAIL_TARGET:g} x p50 at {max(clients)} connections (worst scenario)", {}, _x_str)
    for w in workers:
        for c in clients:
            pair, pgb = _find(service, "pair", c, w), _find(rows, "pgbench-auth", c)
            if pair and pgb and pgb.rate:
                ratio = pair.rate / pgb.rate
                auth.cells[(w, c)] = (ratio, ratio >= AUTH_TARGET and pair.valid)
            sess, pgs = _find(service, "session", c, w), _find(rows, "pgbench-session", c)
            if sess and pgs and pgs.rate:
                ratio = sess.rate / pgs.rate
                session.cells[(w, c)] = (ratio, ratio >= SESSION_TARGET and sess.valid)
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
    return [auth, session, overhead, tail]


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
            a = _find(service, num, c, w)
            b = _find(rows, den, c, w if same_workers else None)
            cells.append(f"{100 * a.rate / b.rate:9.0f}%" if a and b and b.rate else f"{'-':>10}")
        if any(cell.strip() != "-" for cell in cells):
            lines.append(f"{label:<52}" + "".join(cells))

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
    budgets = [
        _budget(
            rows, "pair", "pgbench-auth", AUTH_TARGET, ("pgbench-pair",), ("pgbench-auth", "pgbench-session")
        ),
        _budget(rows, "session", "pgbench-session", SESSION_TARGET, ("pgbench-session",), ()),
        None,
        None,
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
        if budget:
            lines.append(f"        {budget}")
    return lines


def _pg_ms(row: Row | None) -> float | None:
    if row is None or row.cpu is None or not row.units:
        return None
    return 1000 * row.cpu.pg / row.units


def _budget(
    rows: list[Row],
    scenario: str,
    ceiling: str,
    target: float,
    pg_alone: tuple[str, ...],
    pg_sum: tuple[str, ...],
) -> str | None:
    """What the target leaves the app: the machine's CPU per unit at the target rate, less what
    PostgreSQL needs for the same SQL under pgbench and what the load generator took."""
    best: tuple[float, Row, Row] | None = None
    for row in rows:
        base = _find(rows, ceiling, row.clients)
        if row.section == "service" and row.scenario == scenario and base and base.rate and row.units:
            if best is None or row.rate / base.rate > best[0]:
                best = (row.rate / base.rate, row, base)
    if best is None:
        return None
    _, row, base = best
    rate = target * base.rate
    total = 1000 * CPUS / rate
    pg = _pg_ms(_find(rows, pg_alone[0], row.clients))
    if pg is None and pg_sum:
        parts = [_pg_ms(_find(rows, name, row.clients)) for name in pg_sum]
        pg = sum(part for part in parts if part is not None) if all(p is not None for p in parts) else None
    if pg is None or row.cpu is None:
        return None
    # The generator's cost per request where it runs fastest (the trivial endpoint): at low rates
    # its fixed costs would overstate it.
    requests = 2 if scenario == "pair" else 1
    per_request = [
        1000 * r.cpu.gen / r.units for r in rows if r.scenario == "trivial" and r.cpu is not None and r.units
    ]
    gen = requests * min(per_request) if per_request else 1000 * row.cpu.gen / row.units
    app = 1000 * row.cpu.app / row.units
    unit = "pair" if scenario == "pair" else "request"
    return (
        f"budget: at {rate:,.0f} {row.unit} the {CPUS} cores give {total:.2f} ms of CPU per {unit};"
        f" PostgreSQL needs ≥ {pg:.2f} (pgbench), the generator ≈ {gen:.2f}: the app may spend"
        f" ≈ {total - pg - gen:.2f} ms and spends {app:.2f} ({row.workers}w/{row.clients}c)"
    )


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

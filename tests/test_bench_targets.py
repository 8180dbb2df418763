"""The benchmark's verdicts: what `bench --check` fails on (no load is run here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from gwbench.measure import Latency, Row
from gwbench.report import missed, targets

CLIENTS, WORKERS = (16, 64), (1, 2)


def row(scenario: str, rate: float, *, workers: int | None, clients: int = 16, p50: float = 5.0) -> Row:
    section = "ceiling" if scenario.startswith(("floor-", "direct", "trivial")) else "service"
    latency = Latency(count=100, p50=p50, p90=p50, p99=p50 * 3, max=p50 * 4)
    return Row(section, scenario, clients, workers, "rps", rate, latency, errors=0, units=int(rate))


def rows(*, session_share: float, overhead_ms: float) -> list[Row]:
    found = [row("direct", 1000, workers=None, clients=1, p50=0.2)]
    for w in WORKERS:
        found += [
            row("floor-session", 1000, workers=w),
            row("floor-pair", 400, workers=w),
            row("session", 1000 * session_share, workers=w),
            row("pair", 300, workers=w),
            row("proxy", 100, workers=w, clients=1, p50=0.2 + overhead_ms),
        ]
        found += [row(s, 100, workers=w, clients=64) for s in ("session", "pair", "replay", "proxy")]
    return found


class TestCheck:
    def test_nothing_missed_when_every_target_is_met(self) -> None:
        assert missed(rows(session_share=0.8, overhead_ms=0.5), CLIENTS, WORKERS) == []

    def test_a_rate_under_70_percent_of_the_floor_is_missed(self) -> None:
        names = missed(rows(session_share=0.6, overhead_ms=0.5), CLIENTS, WORKERS)
        assert names == ["/betlink/session ≥ 70% of the floor's, 16 connections"]

    def test_the_bidpaw_overhead_over_1_ms_is_missed(self) -> None:
        names = missed(rows(session_share=0.8, overhead_ms=1.5), CLIENTS, WORKERS)
        assert names == ["BidPaw proxy p50 overhead ≤ 1 ms (unloaded: 1 connection)"]

    def test_a_target_not_measured_counts_as_missed(self) -> None:
        measured = [r for r in rows(session_share=0.8, overhead_ms=0.5) if r.scenario != "proxy"]
        assert missed(measured, CLIENTS, WORKERS) == [
            "BidPaw proxy p50 overhead ≤ 1 ms (unloaded: 1 connection)"
        ]

    def test_the_targets_block_names_each_cell(self) -> None:
        text = "\n".join(targets(rows(session_share=0.6, overhead_ms=0.5), CLIENTS, WORKERS))
        assert "1w/16c 60 % MISS, 2w/16c 60 % MISS" in text
        assert "[PASS] session → authenticate pair" in text

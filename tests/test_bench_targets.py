"""The benchmark's verdicts: what `bench --check` fails on (no load is run here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from gwbench.report import missed, targets
from gwbench.wrk import Row

WORKERS = (1, 2)
SESSION = "/betlink/session ≥ 70 % of the floor's rate, 16 connections"
OVERHEAD = "BidPaw open-session p50 ≤ 1 ms over a direct call, 1 connection"
TAIL = "p99 ≤ 4x p50 (worst scenario), the most connections measured"
WALLET = "BidPaw wallet callback p50 ≤ 2 ms over the wallet's own, 1 connection"


def row(scenario: str, rate: float, *, workers: int | None, clients: int = 16, p50: float = 5.0) -> Row:
    return Row(scenario, workers, clients, rate, p50=p50, p99=p50 * 3, errors=0, units=int(rate))


def rows(*, session_share: float, overhead_ms: float, tail: float = 3.0, wallet_ms: float = 1.5) -> list[Row]:
    found = [row("bidpaw-direct", 1000, workers=None, clients=1, p50=0.2)]
    found.append(row("wallet-direct", 1000, workers=None, clients=1, p50=0.4))
    for w in WORKERS:
        found += [
            row("floor-session", 1000, workers=w),
            row("floor-pair", 400, workers=w),
            row("session", 1000 * session_share, workers=w),
            row("pair", 300, workers=w),
            row("open-session", 100, workers=w, clients=1, p50=0.2 + overhead_ms),
            row("wallet", 100, workers=w, clients=1, p50=0.4 + wallet_ms),
        ]
    found.append(Row("replay", 2, 16, 500, p50=2.0, p99=2.0 * tail, errors=0, units=500))
    return found


class TestCheck:
    def test_nothing_missed_when_every_target_is_met(self) -> None:
        assert missed(rows(session_share=0.8, overhead_ms=0.5)) == []

    def test_a_rate_under_70_percent_of_the_floor_is_missed(self) -> None:
        assert missed(rows(session_share=0.6, overhead_ms=0.5)) == [SESSION]

    def test_the_bidpaw_overhead_over_1_ms_is_missed(self) -> None:
        assert missed(rows(session_share=0.8, overhead_ms=1.5)) == [OVERHEAD]

    def test_the_wallet_callbacks_over_2_ms_over_the_wallets_own_are_missed(self) -> None:
        assert missed(rows(session_share=0.8, overhead_ms=0.5, wallet_ms=2.5)) == [WALLET]
        text = "\n".join(targets(rows(session_share=0.8, overhead_ms=0.5, wallet_ms=2.5)))
        assert f"[FAIL] {WALLET}: 1w +2.50 ms MISS, 2w +2.50 ms MISS" in text

    def test_wallet_callbacks_answered_other_than_0_are_missed(self) -> None:
        found = rows(session_share=0.8, overhead_ms=0.5)
        next(r for r in found if r.scenario == "wallet").errors = 2  # once.lua: not errorCode 0
        assert missed(found) == [WALLET]

    def test_a_tail_over_4x_the_median_is_missed(self) -> None:
        assert missed(rows(session_share=0.8, overhead_ms=0.5, tail=5.0)) == [TAIL]

    def test_a_target_not_measured_counts_as_missed(self) -> None:
        measured = [r for r in rows(session_share=0.8, overhead_ms=0.5) if r.scenario != "open-session"]
        assert missed(measured) == [OVERHEAD]

    def test_a_rate_with_more_than_1_percent_errors_is_missed(self) -> None:
        found = rows(session_share=0.8, overhead_ms=0.5)
        next(r for r in found if r.scenario == "session").errors = 50
        assert missed(found) == [SESSION]

    def test_the_targets_block_names_each_cell(self) -> None:
        text = "\n".join(targets(rows(session_share=0.6, overhead_ms=0.5)))
        assert f"[FAIL] {SESSION}: 1w 60 % MISS, 2w 60 % MISS" in text
        assert (
            "[PASS] session → authenticate pair ≥ 70 % of the floor's rate, 16 connections: 1w 75 % ok"
            in text
        )

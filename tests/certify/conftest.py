"""Timings of the certify tests' real processes, shown in pytest's summary (no `-s` needed)."""

from __future__ import annotations

import sys
import time

import pytest

TIMINGS: list[str] = []


def record_timing(what: str, started: float) -> None:
    line = f"{what} in {time.perf_counter() - started:.1f} s"
    TIMINGS.append(line)
    print(f"certify tests: {line}", file=sys.stderr)  # noqa: T201


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("certify timings")
        for line in TIMINGS:
            terminalreporter.write_line(line)

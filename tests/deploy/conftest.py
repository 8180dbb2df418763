"""Timings of the deployment tests' real processes, shown in pytest's summary (no `-s` needed)."""

from __future__ import annotations

import functools
import sys
from collections import defaultdict

import pytest

from tests.processes import timed_with

TIMINGS: list[str] = []
_SPENT: defaultdict[str, float] = defaultdict(float)


def note(line: str) -> None:
    TIMINGS.append(line)
    print(f"[deploy] {line}", file=sys.stderr)  # noqa: T201


# How long a block took: on stderr now, in the run's summary at the end.
timed = functools.partial(timed_with, note)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid.startswith("tests/deploy/"):
        _SPENT[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS and not _SPENT:
        return
    terminalreporter.section("deploy timings")
    for line in TIMINGS:
        terminalreporter.write_line(line)
    for module, seconds in sorted(_SPENT.items()):
        terminalreporter.write_line(f"{module}: {seconds:.1f} s in all (set-up, tests, tear-down)")

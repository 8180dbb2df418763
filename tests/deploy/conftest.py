"""Timings of the deployment tests' real processes, shown in pytest's summary (no `-s` needed)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

TIMINGS: list[str] = []


@contextmanager
def timed(what: str) -> Iterator[None]:
    """Record how long the block took: on stderr now, in the run's summary at the end."""
    started = time.monotonic()
    try:
        yield
    finally:
        note(f"{what}: {time.monotonic() - started:.2f} s")


def note(line: str) -> None:
    TIMINGS.append(line)
    print(f"[deploy] {line}", file=sys.stderr)  # noqa: T201


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("deploy timings")
        for line in TIMINGS:
            terminalreporter.write_line(line)

"""Prometheus metrics, served at /metrics. Route templates, never raw paths, as labels.

The image runs one process per container, so the default registry is the whole truth. With
`serve --workers N`, PROMETHEUS_MULTIPROC_DIR is set for the workers: counters and histograms are
then summed over the workers from their files, and the pool gauges are those of the worker that
answered the scrape, labelled with its pid.
"""

from __future__ import annotations

import os
import platform
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "partner_gateway_http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "partner_gateway_http_request_duration_seconds",
    "Time from request start to the last byte of the answer.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
BETLINK_AUTH = Counter(
    "partner_gateway_betlink_auth_total",
    "BetLink Auth endpoint answers by outcome: AUTHENTICATED, REPLAYED or the errorCode.",
    ["outcome"],
)
BIDPAW_CALLS = Counter("partner_gateway_bidpaw_calls", "BidPaw open-session calls by outcome.", ["outcome"])
BIDPAW_LATENCY = Histogram(
    "partner_gateway_bidpaw_call_seconds",
    "BidPaw open-session call latency, retries included, by outcome.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
BIDPAW_CALLBACKS = Counter(
    "partner_gateway_bidpaw_wallet_callbacks",
    "BidPaw wallet callbacks answered, by method (charge, credit, or invalid) and errorCode.",
    ["method", "error_code"],
)
BIDPAW_CALLBACK_LATENCY = Histogram(
    "partner_gateway_bidpaw_wallet_callback_seconds",
    "Time to answer a BidPaw wallet callback, the casino wallet's included, by method.",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
WALLET_CALLS = Counter(
    "partner_gateway_wallet_calls",
    "Calls to the casino's wallet by operation (debit, credit, reverse) and outcome "
    "(applied, insufficient_funds, refused, unknown).",
    ["operation", "outcome"],
)
WALLET_STUCK = Counter(
    "partner_gateway_wallet_refused_after_answer",
    "Transactions the wallet refused after BidPaw was told otherwise: left for people.",
    ["method"],
)
# Read from the database at each scrape (ops.py): the same in every process.
WALLET_OPEN = Gauge(
    "partner_gateway_wallet_open_transactions",
    "BidPaw wallet transactions not final yet (being answered, to reverse, to deliver).",
    multiprocess_mode="mostrecent",
)
WALLET_OLDEST_OPEN_AGE = Gauge(
    "partner_gateway_wallet_oldest_open_seconds",
    "Age of the oldest BidPaw wallet transaction not final yet (0 when none).",
    multiprocess_mode="mostrecent",
)
WALLET_STUCK_OPEN = Gauge(
    "partner_gateway_wallet_stuck_transactions",
    "Transactions the wallet refused after BidPaw was told they were done: for people.",
    multiprocess_mode="mostrecent",
)
BUILD = Info("partner_gateway_build", "Version of the running service.")
BUILD.info({"version": "0.1.0", "python": platform.python_version()})


class PoolStats(Protocol):
    @property
    def in_use(self) -> int: ...

    @property
    def idle(self) -> int: ...


class PoolCollector(Collector):
    """Connections of the database pool in use and idle, read at scrape time."""

    def __init__(self, *, labels: dict[str, str] | None = None) -> None:
        self._pool: weakref.ref[PoolStats] | None = None
        self._labels = labels or {}

    def track(self, pool: PoolStats) -> None:
        self._pool = weakref.ref(pool)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self._pool() if self._pool is not None else None
        if pool is None:
            return
        names, values = list(self._labels), list(self._labels.values())
        in_use = GaugeMetricFamily(
            "partner_gateway_db_pool_in_use", "Pooled connections checked out.", labels=names
        )
        in_use.add_metric(values, pool.in_use)
        idle = GaugeMetricFamily(
            "partner_gateway_db_pool_idle", "Pooled connections idle in the pool.", labels=names
        )
        idle.add_metric(values, pool.idle)
        yield in_use
        yield idle


# prometheus-client decides at import whether metrics live in memory or in per-process files.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
POOL = PoolCollector(labels={"pid": str(os.getpid())} if MULTIPROCESS else None)
REGISTRY.register(POOL)


def exposition() -> bytes:
    """The text for /metrics: this process's registry, or every worker's files plus our pool."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(POOL)
    registry.register(BUILD)  # the same in every worker: the answering one's will do
    return generate_latest(registry)

"""Drive the checks against a deployment over HTTP, time them, and clean up after the run."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from partner_gateway.certify.checks import CHECKS
from partner_gateway.certify.client import (
    Deployment,
    Failed,
    Options,
    Secrets,
    Skipped,
    describe,
)
from partner_gateway.certify.expectations import Check, Stats
from partner_gateway.certify.wallet_checks import WALLET_CHECKS

CHECK_DEADLINE_SECONDS = 30.0  # on top of the longest TTL an expiry check waits out
# A 429 comes from a rate limit in front (the service itself never answers one): the shipped
# nginx limits each address on the public listener, and certify runs from one address. The
# request never reached the service, so it is sent again after a pause, a few times.
RATE_LIMITED_RETRIES = 6
RATE_LIMITED_PAUSE_SECONDS = 0.5


class PacedTransport(httpx.AsyncBaseTransport):
    """httpx's transport, sending a request again when a proxy's rate limit answered 429."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, RATE_LIMITED_RETRIES + 1):
            response = await self._inner.handle_async_request(request)
            if response.status_code != 429:
                return response
            await response.aclose()
            await asyncio.sleep(RATE_LIMITED_PAUSE_SECONDS * attempt)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True)
class Result:
    check: Check
    passed: bool
    seconds: float
    expected: str | None = None
    actual: str | None = None
    stats: Stats | None = None
    skipped: str | None = None  # why the check did not run (then `passed` is True)


@dataclass(frozen=True)
class Cleanup:
    done: bool
    message: str


@dataclass(frozen=True)
class Run:
    url: str
    player: str
    started: datetime
    seconds: float
    results: tuple[Result, ...]
    cleanup: Cleanup

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results) and self.cleanup.done


def selected(options: Options) -> tuple[Check, ...]:
    chosen = tuple(check for check in CHECKS if options.bidpaw or not check.bidpaw)
    return chosen + (WALLET_CHECKS if options.bidpaw_wallet else ())


async def certify(
    url: str,
    *,
    gateway_key: str,
    betlink_key: str,
    options: Options,
    timeout: float = 10.0,
    http: httpx.AsyncClient | None = None,
) -> Run:
    """Every selected check in order against `url` (or the given client), then the unblock."""
    started, clock = datetime.now(UTC), time.perf_counter()
    limits = httpx.Limits(max_connections=max(options.parallel_same_key, options.parallel_keys) + 8)
    client = http or httpx.AsyncClient(
        base_url=url,
        timeout=timeout,
        follow_redirects=False,
        transport=PacedTransport(httpx.AsyncHTTPTransport(limits=limits)),
    )
    deployment = Deployment(client, gateway_key, betlink_key, options, Secrets([gateway_key, betlink_key]))
    checks = selected(options)
    try:
        # The expiry checks wait out a TTL: they start first, each on a player of its own (the
        # other checks block and unblock the main one), and wait while the others run.
        waiting = {
            check.id: asyncio.create_task(run_check(_aside(deployment, check), check))
            for check in checks
            if check.waits
        }
        results = {check.id: await run_check(deployment, check) for check in checks if not check.waits}
        results.update({name: await task for name, task in waiting.items()})
        cleanup = await _cleanup(deployment)
    finally:
        if http is None:
            await client.aclose()
    ordered = tuple(results[check.id] for check in checks)
    return Run(url, options.player, started, time.perf_counter() - clock, ordered, cleanup)


def _aside(deployment: Deployment, check: Check) -> Deployment:
    """The same deployment and client for a check that runs alongside the others, on its own player."""
    options = dataclasses.replace(deployment.options, player=f"{deployment.player}-{check.id.split('.')[-1]}")
    return dataclasses.replace(deployment, options=options, latencies=[])


def _longest_wait(options: Options) -> float:
    return max(ttl or 0.0 for ttl in (options.launch_token_ttl, options.session_ttl, options.idempotency_ttl))


async def run_check(deployment: Deployment, check: Check) -> Result:
    """One check, bounded in time; whatever goes wrong is a FAIL with secrets masked."""
    deployment.check = check.id
    deployment.latencies.clear()
    mask = deployment.secrets.mask
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_DEADLINE_SECONDS + _longest_wait(deployment.options)):
            stats = await check.run(deployment)
    except Skipped as skipped:
        return Result(check, True, time.perf_counter() - started, skipped=str(skipped))
    except Failed as failed:
        return Result(check, False, time.perf_counter() - started, mask(failed.expected), mask(failed.actual))
    except Exception as exc:  # a transport error, a deadline, an answer the check could not read
        actual = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return Result(check, False, time.perf_counter() - started, check.title, mask(actual))
    return Result(check, True, time.perf_counter() - started, stats=stats)


async def _cleanup(deployment: Deployment) -> Cleanup:
    deployment.check = "cleanup"
    what = f"DELETE {deployment.block_path()}"
    try:
        answer = await deployment.block(blocked=False)
    except httpx.HTTPError as exc:
        return Cleanup(False, f"cleanup FAILED: {what}: {type(exc).__name__}; unblock it by hand")
    if answer.status_code != 204:
        shown = deployment.secrets.mask(describe(answer))
        return Cleanup(False, f"cleanup FAILED: {what} answered {shown}; unblock it by hand")
    return Cleanup(True, f"cleanup: player {deployment.player} unblocked ({what} answered 204)")

"""Drive the checks against a deployment over HTTP, time them, and clean up after the run."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from partner_gateway.certify.checks import CHECKS, Check, Stats
from partner_gateway.certify.client import (
    Deployment,
    Failed,
    LaunchToken,
    Options,
    Secrets,
    Skipped,
    describe,
)
from partner_gateway.certify.wallet_checks import WALLET_CHECKS

CHECK_DEADLINE_SECONDS = 30.0  # on top of the launch-token life the expiry check waits out


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
    client = http or httpx.AsyncClient(
        base_url=url,
        timeout=timeout,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=max(options.parallel_same_key, options.parallel_keys) + 2),
    )
    deployment = Deployment(client, gateway_key, betlink_key, options, Secrets([gateway_key, betlink_key]))
    try:
        deployment.early_token = await _early_token(deployment)
        results = [await run_check(deployment, check) for check in selected(options)]
        cleanup = await _cleanup(deployment)
    finally:
        if http is None:
            await client.aclose()
    return Run(url, options.player, started, time.perf_counter() - clock, tuple(results), cleanup)


async def _early_token(deployment: Deployment) -> LaunchToken | None:
    deployment.check = "auth.expired_token"
    try:
        return await deployment.launch_token()
    except (Failed, httpx.HTTPError):
        return None  # the expiry check asks again, and reports what it gets


async def run_check(deployment: Deployment, check: Check) -> Result:
    """One check, bounded in time; whatever goes wrong is a FAIL with secrets masked."""
    deployment.check = check.id
    deployment.latencies.clear()
    mask = deployment.secrets.mask
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_DEADLINE_SECONDS + deployment.options.launch_token_ttl):
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

"""What every check expects of an answer, and the pieces the checks share.

A check is an async function of the `Deployment` that raises `Failed` with what it expected and
what came back; it may return the latency figures of its concurrent requests. The helpers here
say what an answer must be (BetLink's error shape, a problem+json, the Auth endpoint's 200), keep
the player blocked for a while, and show something with a TTL alive until just before it ends.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from partner_gateway.certify.client import Deployment, Failed, Skipped, describe, json_or_none

Stats = dict[str, float]
CheckFunction = Callable[[Deployment], Awaitable[Stats | None]]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    run: CheckFunction
    bidpaw: bool = False  # only with --bidpaw
    waits: bool = False  # waits out a TTL: runs alongside the others, on a player of its own

    @property
    def group(self) -> str:
        return self.id.split(".", 1)[0]


BETLINK_ERROR_FIELDS = {"status", "errorCode", "errorMessage"}
SUCCESS_FIELDS = {
    "requestId",
    "userId",
    "operatorId",
    "operatorSessionToken",
    "timestamp",
    "status",
    "sessionExpiry",
    "redirectUrl",
}
PROBLEM_FIELDS = {"type", "title", "status", "detail"}
CLOCK_SKEW_MS = 5 * 60 * 1000
EXPIRY_SLACK_MS = 2000
URL_SAFE_256_BITS = re.compile(r"^[A-Za-z0-9_-]{43,}$")
EXPIRY_MARGIN_SECONDS = 0.5  # an expiry is probed this long after it, and up to a second before
EXPIRY_ATTEMPTS = 3


# --- expectations ---------------------------------------------------------------------------


def expect_betlink_error(response: httpx.Response, status: int, code: str, *, probe: str = "") -> None:
    """BetLink's error shape: exactly status FAILED_AUTHENTICATION, the errorCode, a message."""
    body = json_or_none(response)
    expected = f"{probe}{status} {{status: FAILED_AUTHENTICATION, errorCode: {code}, errorMessage}}"
    if (
        response.status_code != status
        or not isinstance(body, dict)
        or set(body) != BETLINK_ERROR_FIELDS
        or body["status"] != "FAILED_AUTHENTICATION"
        or body["errorCode"] != code
        or not isinstance(body["errorMessage"], str)
        or not response.headers.get("content-type", "").startswith("application/json")
    ):
        raise Failed(expected, describe(response))


def expect_problem(response: httpx.Response, status: int, *, probe: str = "") -> None:
    """RFC 9457 problem+json with the answer's status."""
    body = json_or_none(response)
    if (
        response.status_code != status
        or not response.headers.get("content-type", "").startswith("application/problem+json")
        or not isinstance(body, dict)
        or not PROBLEM_FIELDS <= body.keys()
        or body["status"] != status
    ):
        raise Failed(
            f"{probe}{status} application/problem+json {{type, title, status, detail}}", describe(response)
        )


def expect_status(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise Failed(f"{what}: {status}", describe(response))


def expect_body(response: httpx.Response, body: dict[str, Any], what: str) -> None:
    if response.status_code != 200 or json_or_none(response) != body:
        raise Failed(f"{what}: 200 {body}", describe(response))


def success_fields(
    sent: dict[str, Any], response: httpx.Response, *, session_ms: float = 30 * 60 * 1000
) -> list[str]:
    """What is wrong with a 200 of the Auth endpoint (nothing: an empty list)."""
    body = json_or_none(response)
    if response.status_code != 200 or not isinstance(body, dict):
        return ["a 200 JSON object"]
    wrong = [f"field set {sorted(SUCCESS_FIELDS)}"] if set(body) != SUCCESS_FIELDS else []
    wrong += [
        f"{name} a string" for name in sorted(SUCCESS_FIELDS & body.keys()) if not isinstance(body[name], str)
    ]
    if wrong:
        return wrong
    wrong += [f"{name} echoed" for name in ("requestId", "userId", "operatorId") if body[name] != sent[name]]
    if body["status"] != "AUTHENTICATED":
        wrong.append("status AUTHENTICATED")
    if not URL_SAFE_256_BITS.match(body["operatorSessionToken"]):
        wrong.append("operatorSessionToken URL-safe, at least 256 bits")
    if not (body["timestamp"].isdigit() and body["sessionExpiry"].isdigit()):
        return [*wrong, "timestamp and sessionExpiry epoch milliseconds"]
    timestamp, expiry = int(body["timestamp"]), int(body["sessionExpiry"])
    if abs(timestamp - time.time() * 1000) > CLOCK_SKEW_MS:
        wrong.append("timestamp within 5 minutes of this machine's clock")
    if abs(expiry - timestamp - session_ms) > EXPIRY_SLACK_MS:
        wrong.append(f"sessionExpiry = timestamp + {session_ms / 1000:g} s")
    if (
        urlsplit(body["redirectUrl"]).scheme not in ("http", "https")
        or not urlsplit(body["redirectUrl"]).netloc
    ):
        wrong.append("redirectUrl an absolute URL")
    return wrong


def is_no_store(response: httpx.Response) -> bool:
    directives = response.headers.get("cache-control", "").split(",")
    return "no-store" in (directive.strip().lower() for directive in directives)


def percentiles(latencies: list[float]) -> Stats:
    ordered = sorted(latencies)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered) - 1e-9) - 1)] * 1000  # nearest rank

    return {"requests": len(ordered), "p50_ms": round(rank(0.50), 1), "p99_ms": round(rank(0.99), 1)}


@asynccontextmanager
async def blocked(d: Deployment) -> AsyncIterator[None]:
    """The player blocked for the duration of a check, and unblocked after it."""
    expect_status(await d.block(), 204, f"PUT {d.block_path()}")
    try:
        yield
    finally:
        await d.block(blocked=False)


def live_session(d: Deployment, session: dict[str, Any]) -> dict[str, Any]:
    """The introspection of a live session token, as the Auth endpoint's 200 gave it."""
    return {"active": True, "userId": d.player, "sessionExpiry": session["sessionExpiry"]}


# --- TTLs: something alive until just before its TTL, then probed just after it ----------------


async def until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


def opted_in(ttl: float | None, flag: str, what: str) -> float:
    if ttl is None:
        raise Skipped(f"{flag} not given: {what} not checked (give the deployment's value to check it)")
    return ttl


@dataclass(frozen=True)
class Lived:
    """Something with a TTL: asked for at `sent`, answered at `received` (time.monotonic)."""

    sent: float
    received: float
    value: Any


async def alive_just_before(
    ttl: float,
    what: str,
    start: Callable[[], Awaitable[Any]],
    alive: Callable[[Any], Awaitable[httpx.Response | None]],
) -> Lived:
    """Make something with a TTL, and show it alive up to a second before the TTL runs out.

    `alive` answers None, or the answer that shows it dead. Such an answer proves an early
    expiry only when it came back before `sent` + TTL (the deployment's clock cannot have
    started later); one that came back after proves nothing on a slow deployment, so that is
    tried again, a few times, before the check says it could not tell.
    """
    for _ in range(EXPIRY_ATTEMPTS):
        sent = time.monotonic()
        lived = Lived(sent, 0.0, await start())
        lived = Lived(sent, time.monotonic(), lived.value)
        await until(lived.received + ttl - min(1.0, ttl / 2))
        dead = await alive(lived.value)
        if dead is None:
            return lived
        if time.monotonic() < sent + ttl:
            raise Failed(
                f"{what} alive {ttl - min(1.0, ttl / 2):g} s after it began (TTL {ttl:g} s)", describe(dead)
            )
    raise Failed(
        f"{what} alive up to a second before its TTL ({ttl:g} s)",
        f"{EXPIRY_ATTEMPTS} answers came back only after the TTL had run out: too slow to tell",
    )

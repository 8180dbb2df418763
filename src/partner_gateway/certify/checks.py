"""The checks, as data: what BetLink's and BidPaw's certification will look at, in order.

Each check is an async function of the `Deployment` that raises `Failed` with what it expected
and what came back; it may return the latency figures of its concurrent requests. A check that
changes the player's state (a block) puts it back before it returns.
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
from prometheus_client.parser import text_string_to_metric_families

from partner_gateway.certify.client import (
    Deployment,
    Failed,
    auth_body,
    describe,
    json_or_none,
    launch_token_of,
    new_key,
    random_token,
)

Stats = dict[str, float]
CheckFunction = Callable[[Deployment], Awaitable[Stats | None]]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    run: CheckFunction
    bidpaw: bool = False  # only with --bidpaw

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
SESSION_MS = 30 * 60 * 1000
CLOCK_SKEW_MS = 5 * 60 * 1000
EXPIRY_SLACK_MS = 2000
URL_SAFE_256_BITS = re.compile(r"^[A-Za-z0-9_-]{43,}$")
EXPIRY_MARGIN_SECONDS = 0.5


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


def success_fields(sent: dict[str, Any], response: httpx.Response) -> list[str]:
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
    if abs(expiry - timestamp - SESSION_MS) > EXPIRY_SLACK_MS:
        wrong.append("sessionExpiry = timestamp + 30 minutes")
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


# --- 1. the Auth endpoint, row by row of the check table --------------------------------------


async def api_key(d: Deployment) -> None:
    launch = await d.launch_token()
    for probe, value in (("missing X-API-Key: ", ""), ("wrong X-API-Key: ", "certify-not-a-key")):
        expect_betlink_error(
            await d.authenticate(auth_body(launch), api_key=value), 403, "AUTHENTICATION_FAILED", probe=probe
        )
    await d.exchange(launch)  # and with the right key, the same request is accepted


async def idempotency_key(d: Deployment) -> None:
    launch = await d.launch_token()
    for probe, value in (("missing X-Idempotency-Key: ", ""), ("X-Idempotency-Key not a UUID: ", "12345")):
        expect_betlink_error(
            await d.authenticate(auth_body(launch), key=value), 400, "MISSING_PARAMETER", probe=probe
        )


async def repeated_headers(d: Deployment) -> None:
    """A second copy of an identity header is refused before anything else is looked at."""
    launch = await d.launch_token()
    for name, code in (("X-API-Key", "AUTHENTICATION_FAILED"), ("X-Idempotency-Key", "MISSING_PARAMETER")):
        answer = await d.authenticate(auth_body(launch), twice=name)
        expect_betlink_error(answer, 403 if name == "X-API-Key" else 400, code, probe=f"{name} twice: ")
    for name, status in (("Authorization", 401), ("X-User-Id", 400)):
        headers = list(d.gateway(user=d.player).items())
        headers += [(header, value) for header, value in headers if header == name]
        refused = await d.request("POST", "/betlink/session", headers=headers)
        expect_problem(refused, status, probe=f"POST /betlink/session with {name} twice: ")
    await d.exchange(launch)  # and with one copy of each, the same request is accepted


def _malformed_bodies(good: dict[str, Any]) -> list[tuple[str, bytes | dict[str, Any]]]:
    bodies: list[tuple[str, bytes | dict[str, Any]]] = [("not JSON", b"{not json"), ("not an object", b"[]")]
    bodies += [(f"{name} missing", {k: v for k, v in good.items() if k != name}) for name in good]
    bodies += [
        ("launchToken empty", {**good, "launchToken": ""}),
        ("userId a number", {**good, "userId": 42}),
        ("requestId not a UUID", {**good, "requestId": "not-a-uuid"}),
        ("authRequestedTimestamp not digits", {**good, "authRequestedTimestamp": "16409952OO000"}),
    ]
    return bodies


async def body_shape(d: Deployment) -> None:
    launch = await d.launch_token()
    for probe, body in _malformed_bodies(auth_body(launch)):
        expect_betlink_error(await d.authenticate(body), 400, "MISSING_PARAMETER", probe=f"{probe}: ")


async def operator_id(d: Deployment) -> None:
    launch = await d.launch_token()
    body = auth_body(launch, operatorId=launch.operator_id + "-not-ours")
    expect_betlink_error(await d.authenticate(body), 403, "AUTHENTICATION_FAILED")
    await d.exchange(launch)  # and with /betlink/session's operatorId, it is accepted


async def key_reuse(d: Deployment) -> None:
    first, second = await d.launch_token(), await d.launch_token()
    key = new_key()
    expect_status(await d.authenticate(auth_body(first), key=key), 200, "first use of the key")
    reused = await d.authenticate(auth_body(second), key=key)
    expect_betlink_error(reused, 403, "AUTHENTICATION_FAILED", probe="the key again, another launchToken: ")


async def unknown_token(d: Deployment) -> None:
    launch = await d.launch_token()
    body = auth_body(launch, launchToken=random_token())
    expect_betlink_error(await d.authenticate(body), 401, "INVALID_SESSION")


async def used_token(d: Deployment) -> None:
    launch = await d.launch_token()
    await d.exchange(launch)
    again = await d.authenticate(auth_body(launch))
    expect_betlink_error(again, 401, "INVALID_SESSION", probe="an exchanged launchToken, new key: ")


async def expired_token(d: Deployment) -> None:
    """The launch token the runner asked for when it started, presented once its life is over."""
    launch = d.early_token or await d.launch_token()
    wait = launch.received_at + d.options.launch_token_ttl + EXPIRY_MARGIN_SECONDS - time.monotonic()
    await asyncio.sleep(max(0.0, wait))
    late = await d.authenticate(auth_body(launch))
    expect_betlink_error(
        late,
        401,
        "INVALID_SESSION",
        probe=f"{d.options.launch_token_ttl:g} s later (--launch-token-ttl: the deployment's TTL?): ",
    )


async def wrong_user(d: Deployment) -> None:
    launch = await d.launch_token()
    body = auth_body(launch, userId=f"{d.player}-someone-else")
    expect_betlink_error(await d.authenticate(body), 400, "INVALID_USER")


async def blocked_player(d: Deployment) -> None:
    launch = await d.launch_token()
    async with blocked(d):
        pending = await d.authenticate(auth_body(launch))
    expect_betlink_error(pending, 400, "USER_BLOCKED", probe="a pending launchToken of a blocked player: ")


async def success(d: Deployment) -> None:
    launch = await d.launch_token()
    sent = auth_body(launch)
    response = await d.authenticate(sent)
    wrong = success_fields(sent, response)
    if wrong or not response.headers.get("content-type", "").startswith("application/json"):
        raise Failed("200 application/json, " + "; ".join(wrong or ["content type"]), describe(response))


async def no_store(d: Deployment) -> None:
    """Answers that carry a token must not be kept by a cache or proxy on the way."""
    issued = await d.issue()
    answered = await d.authenticate(auth_body(launch_token_of(issued)))
    expect_status(answered, 200, "POST /betlink/authenticate")
    introspected = await d.introspect(answered.json()["operatorSessionToken"])
    for what, answer in (("session", issued), ("authenticate", answered), ("introspect", introspected)):
        if not is_no_store(answer):
            raise Failed(
                f"{what}: Cache-Control: no-store", f"Cache-Control: {answer.headers.get('cache-control')}"
            )


# --- 2. idempotency --------------------------------------------------------------------------


async def replay(d: Deployment) -> None:
    launch, key = await d.launch_token(), new_key()
    first = await d.authenticate(auth_body(launch), key=key)
    expect_status(first, 200, "first use of the key")
    again = await d.authenticate(auth_body(launch), key=key)  # a new requestId and timestamp
    if again.status_code != 200 or again.content != first.content:
        raise Failed(
            f"the same key again, new requestId: the first 200 byte for byte ({describe(first)})",
            describe(again),
        )


async def other_body(d: Deployment) -> None:
    launch, key = await d.launch_token(), new_key()
    expect_status(await d.authenticate(auth_body(launch), key=key), 200, "first use of the key")
    other = await d.authenticate(auth_body(launch, userId=f"{d.player}-someone-else"), key=key)
    expect_betlink_error(other, 403, "AUTHENTICATION_FAILED", probe="the key again, another userId: ")


async def failed_key_fresh(d: Deployment) -> None:
    launch, key = await d.launch_token(), new_key()
    failed = await d.authenticate(auth_body(launch, userId=f"{d.player}-someone-else"), key=key)
    if failed.status_code == 200:
        raise Failed("a wrong userId: not 200", describe(failed))
    again = await d.authenticate(auth_body(launch), key=key)
    expect_status(again, 200, "the failed key again, with the right userId")


async def parallel_same_key(d: Deployment) -> Stats:
    launch, key = await d.launch_token(), new_key()
    body = auth_body(launch)
    count = d.options.parallel_same_key
    answers = await d.concurrently(d.authenticate(body, key=key) for _ in range(count))
    tokens = {str((json_or_none(a) or {}).get("operatorSessionToken")) for a in answers}
    if (
        any(a.status_code != 200 for a in answers)
        or len({a.content for a in answers}) != 1
        or len(tokens) != 1
    ):
        statuses = sorted(a.status_code for a in answers)
        actual = (
            f"statuses {statuses}, {len({a.content for a in answers})} distinct bodies, {len(tokens)} tokens"
        )
        raise Failed(f"{count} parallel requests, one key: all 200, one body, one token", actual)
    return percentiles(d.latencies)


async def parallel_keys(d: Deployment) -> Stats:
    launch = await d.launch_token()
    count = d.options.parallel_keys
    answers = await d.concurrently(d.authenticate(auth_body(launch)) for _ in range(count))
    winners = [a for a in answers if a.status_code == 200]
    if len(winners) != 1:
        raise Failed(
            f"{count} parallel keys, one launchToken: exactly one 200", f"{len(winners)} answered 200"
        )
    for loser in (a for a in answers if a.status_code != 200):
        expect_betlink_error(loser, 401, "INVALID_SESSION", probe="the others: ")
    return percentiles(d.latencies)


# --- 3. the wallet's view --------------------------------------------------------------------


async def introspect_live(d: Deployment) -> None:
    session = await d.exchange(await d.launch_token())
    live = await d.introspect(session["operatorSessionToken"])
    expected = {"active": True, "userId": d.player, "sessionExpiry": session["sessionExpiry"]}
    expect_body(live, expected, "a live operatorSessionToken")


async def introspect_unknown(d: Deployment) -> None:
    expect_body(await d.introspect(random_token() * 2), {"active": False}, "an unknown token")


async def introspect_blocked(d: Deployment) -> None:
    session = await d.exchange(await d.launch_token())
    async with blocked(d):
        after = await d.introspect(session["operatorSessionToken"])
    expect_body(after, {"active": False}, "a session token of a player since blocked")


async def block(d: Deployment) -> None:
    async with blocked(d):
        expect_status(await d.block(), 204, f"PUT {d.block_path()} again (idempotent)")
        refused = await d.issue()
        expect_problem(refused, 403, probe="POST /betlink/session for a blocked player: ")


async def unblock(d: Deployment) -> None:
    expect_status(await d.block(), 204, f"PUT {d.block_path()}")
    for attempt in ("", " again (idempotent)"):
        expect_status(await d.block(blocked=False), 204, f"DELETE {d.block_path()}{attempt}")
    await d.launch_token()  # raises unless 201


# --- 4. BidPaw -------------------------------------------------------------------------------


async def _open_session(d: Deployment, *, user: str | None = None, nick: str = "Certify") -> httpx.Response:
    headers = d.gateway(user=user or d.player) if user != "" else d.gateway()
    return await d.request("GET", "/bidpaw/open-session", headers=headers, params={"nick": nick})


async def bidpaw_iframe(d: Deployment) -> None:
    response = await _open_session(d)
    body = json_or_none(response)
    url = body.get("iframeURL") if isinstance(body, dict) else None
    parts = urlsplit(url) if isinstance(url, str) else None
    prefix = d.options.bidpaw_iframe_prefix
    if (
        response.status_code != 200
        or not isinstance(body, dict)
        or set(body) != {"iframeURL"}
        or parts is None
        or parts.scheme != "https"
        or not parts.netloc
        or (prefix is not None and not str(url).startswith(prefix))
        or not is_no_store(response)
    ):
        where = f" starting with {prefix}" if prefix else ""
        raise Failed(
            f'200 {{"iframeURL": an absolute https URL{where}}}, Cache-Control: no-store', describe(response)
        )


async def bidpaw_blocked(d: Deployment) -> None:
    async with blocked(d):
        refused = await _open_session(d)
    expect_problem(refused, 403, probe="a blocked player: ")


async def bidpaw_bad_input(d: Deployment) -> None:
    expect_problem(await _open_session(d, user=""), 400, probe="no X-User-Id: ")
    expect_problem(await _open_session(d, user="u" * 129), 400, probe="an X-User-Id of 129 characters: ")
    anonymous = await d.request("GET", "/bidpaw/open-session", headers={"X-User-Id": d.player})
    expect_problem(anonymous, 401, probe="no gateway key: ")


# --- 4b. BidPaw's open-session as BidPaw documents it today ------------------------------------
# The accepted probes call BidPaw for real, with the test player's currency EUR: BidPaw keeps
# the first currency it sees for a player, and the test player is a player of its own.


async def _open_session_with(
    d: Deployment, headers: list[tuple[str, str]] | None = None, *, lang: str | None = None
) -> httpx.Response:
    sent = [*d.gateway(user=d.player).items(), *(headers or [])]
    params = {"nick": "Certify", **({"lang": lang} if lang is not None else {})}
    return await d.request("GET", "/bidpaw/open-session", headers=sent, params=params)


async def bidpaw_player_headers(d: Deployment) -> None:
    refused = [
        ("X-User-Country", ""),
        ("X-User-Country", "DEU"),
        ("X-User-Country", "D1"),
        ("X-User-Currency", ""),
        ("X-User-Currency", "XXX"),
        ("X-User-Currency", "BTC"),
    ]
    for name, value in refused:
        expect_problem(await _open_session_with(d, [(name, value)]), 400, probe=f"{name}: {value!r}: ")
    accepted = await _open_session_with(d, [("X-User-Country", "de"), ("X-User-Currency", "eur")])
    expect_status(accepted, 200, "X-User-Country: de and X-User-Currency: eur (any case)")


async def bidpaw_repeated_player_headers(d: Deployment) -> None:
    for name, value in (("X-User-Country", "DE"), ("X-User-Currency", "EUR")):
        refused = await _open_session_with(d, [(name, value), (name, value)])
        expect_problem(refused, 400, probe=f"{name} twice: ")


async def bidpaw_lang(d: Deployment) -> None:
    for value in ("e", "en_US", "abcdefghi", "en us"):
        expect_problem(await _open_session_with(d, lang=value), 400, probe=f"lang={value!r}: ")
    expect_status(await _open_session_with(d, lang="pt-BR"), 200, "lang=pt-BR")


# --- 5. operations ---------------------------------------------------------------------------


async def healthz(d: Deployment) -> None:
    expect_status(await d.request("GET", "/healthz"), 200, "GET /healthz")


async def readyz(d: Deployment) -> None:
    expect_status(await d.request("GET", "/readyz"), 200, "GET /readyz")


async def metrics(d: Deployment) -> None:
    response = await d.request("GET", "/metrics")
    expected = "200 Prometheus text with partner_gateway_http_requests_total"
    try:
        names = {family.name for family in text_string_to_metric_families(response.text)}
    except ValueError:
        raise Failed(expected, describe(response)) from None
    if response.status_code != 200 or "partner_gateway_http_requests" not in names:
        raise Failed(expected, describe(response))


async def request_id(d: Deployment) -> None:
    for method, path in (("GET", "/healthz"), ("POST", "/betlink/authenticate")):
        sent = d.request_id()
        answer = await d.request(method, path, headers={"X-Request-ID": sent})
        if answer.headers.get("x-request-id") != sent:
            raise Failed(
                f"{method} {path}: X-Request-ID {sent} echoed", f"{answer.headers.get('x-request-id')}"
            )


CHECKS: tuple[Check, ...] = (
    Check("auth.api_key", "Auth #1: X-API-Key missing or wrong is 403 AUTHENTICATION_FAILED", api_key),
    Check(
        "auth.idempotency_key",
        "Auth #2: X-Idempotency-Key missing or not a UUID is 400 MISSING_PARAMETER",
        idempotency_key,
    ),
    Check(
        "auth.repeated_headers",
        "Auth #1, #2: X-API-Key or X-Idempotency-Key twice is refused; so is a repeated gateway header",
        repeated_headers,
    ),
    Check("auth.body_shape", "Auth #2: a malformed body is 400 MISSING_PARAMETER", body_shape),
    Check("auth.operator_id", "Auth #3: another operatorId is 403 AUTHENTICATION_FAILED", operator_id),
    Check(
        "auth.key_reuse",
        "Auth #4: a processed key with another launchToken is 403 AUTHENTICATION_FAILED",
        key_reuse,
    ),
    Check("auth.unknown_token", "Auth #6: an unknown launchToken is 401 INVALID_SESSION", unknown_token),
    Check("auth.used_token", "Auth #9: an exchanged launchToken is 401 INVALID_SESSION", used_token),
    Check("auth.expired_token", "Auth #9: an expired launchToken is 401 INVALID_SESSION", expired_token),
    Check("auth.wrong_user", "Auth #7: another player's userId is 400 INVALID_USER", wrong_user),
    Check(
        "auth.blocked_player",
        "Auth #8: a blocked player's pending launchToken is 400 USER_BLOCKED",
        blocked_player,
    ),
    Check("auth.success", "Auth: 200 carries the eight fields and a 30-minute sessionExpiry", success),
    Check(
        "auth.no_store",
        "session, authenticate and introspect answers carry Cache-Control: no-store",
        no_store,
    ),
    Check("idempotency.replay", "a replay is byte-identical, even with a new requestId", replay),
    Check("idempotency.other_body", "the same key with another body is 403", other_body),
    Check("idempotency.failed_key_fresh", "a failed attempt's key is evaluated afresh", failed_key_fresh),
    Check(
        "idempotency.parallel_same_key",
        "parallel requests with one key: one token, identical bodies",
        parallel_same_key,
    ),
    Check("idempotency.parallel_keys", "parallel keys on one launchToken: exactly one 200", parallel_keys),
    Check(
        "wallet.introspect_live",
        "introspection of a live token: active, the player, its expiry",
        introspect_live,
    ),
    Check(
        "wallet.introspect_unknown",
        'introspection of an unknown token: exactly {"active": false}',
        introspect_unknown,
    ),
    Check("wallet.introspect_blocked", "introspection after a block: inactive", introspect_blocked),
    Check("wallet.block", "block is idempotent; a blocked player gets no launch token (403)", block),
    Check("wallet.unblock", "unblock is idempotent; the player gets launch tokens again", unblock),
    Check("bidpaw.open_session", "open-session answers a usable https iframeURL", bidpaw_iframe, bidpaw=True),
    Check("bidpaw.blocked", "open-session for a blocked player is 403", bidpaw_blocked, bidpaw=True),
    Check(
        "bidpaw.bad_input",
        "open-session refuses bad input (400) and no gateway key (401)",
        bidpaw_bad_input,
        bidpaw=True,
    ),
    Check(
        "bidpaw.player_headers",
        "open-session refuses an empty or malformed X-User-Country or X-User-Currency, and a currency "
        "BidPaw does not support (400); accepts them in any case",
        bidpaw_player_headers,
        bidpaw=True,
    ),
    Check(
        "bidpaw.repeated_player_headers",
        "open-session refuses X-User-Country or X-User-Currency sent twice (400)",
        bidpaw_repeated_player_headers,
        bidpaw=True,
    ),
    Check(
        "bidpaw.lang",
        "open-session refuses a lang that is not 2 to 8 letters and hyphens (400); accepts pt-BR",
        bidpaw_lang,
        bidpaw=True,
    ),
    Check("ops.healthz", "GET /healthz is 200", healthz),
    Check("ops.readyz", "GET /readyz is 200", readyz),
    Check("ops.metrics", "GET /metrics is Prometheus text", metrics),
    Check("ops.request_id", "X-Request-ID is echoed", request_id),
)

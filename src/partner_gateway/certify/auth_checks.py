"""BetLink's Auth endpoint (`POST /betlink/authenticate`), row by row of the contract's check
table, and its idempotency keys."""

from __future__ import annotations

import json
from typing import Any

import httpx

from partner_gateway.certify.client import (
    Deployment,
    Failed,
    LaunchToken,
    auth_body,
    describe,
    json_or_none,
    launch_token_of,
    new_key,
    random_token,
)
from partner_gateway.certify.expectations import (
    EXPIRY_MARGIN_SECONDS,
    Stats,
    alive_just_before,
    blocked,
    expect_betlink_error,
    expect_body,
    expect_problem,
    expect_status,
    is_no_store,
    live_session,
    opted_in,
    percentiles,
    success_fields,
    until,
)

# --- 1. the Auth endpoint, row by row of the check table --------------------------------------


async def api_key(d: Deployment) -> None:
    launch = await d.launch_token()
    for probe, value in (
        ("missing X-API-Key: ", ""),
        ("wrong X-API-Key: ", "certify-not-a-key"),
        ("the casino gateway's key as X-API-Key: ", d.gateway_key),
    ):
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
    for name, statuses in (("Authorization", (401, 400)), ("X-User-Id", (400,))):
        headers = list(d.gateway(user=d.player).items())
        headers += [(header, value) for header, value in headers if header == name]
        refused = await d.request("POST", "/betlink/session", headers=headers)
        # A front proxy may refuse a second Authorization itself (nginx: 400), in our shape.
        status = refused.status_code if refused.status_code in statuses else statuses[0]
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
    """A launch token exchanged just before its TTL (200), and another just after it (401)."""
    ttl = opted_in(d.options.launch_token_ttl, "--launch-token-ttl", "launch-token expiry")

    async def alive(pair: tuple[LaunchToken, LaunchToken]) -> httpx.Response | None:
        answer = await d.authenticate(auth_body(pair[0]))
        return None if answer.status_code == 200 else answer

    async def two() -> tuple[LaunchToken, LaunchToken]:
        return await d.launch_token(), await d.launch_token()

    lived = await alive_just_before(ttl, "a launchToken", two, alive)
    await until(lived.received + ttl + EXPIRY_MARGIN_SECONDS)
    expect_betlink_error(
        await d.authenticate(auth_body(lived.value[1])),
        401,
        "INVALID_SESSION",
        probe=f"{ttl + EXPIRY_MARGIN_SECONDS:g} s after issue (--launch-token-ttl {ttl:g}): ",
    )


async def pending_across_block(d: Deployment) -> None:
    """A block revokes launch tokens not yet exchanged: after the unblock they stay dead."""
    launch = await d.launch_token()
    async with blocked(d):
        pass
    after = await d.authenticate(auth_body(launch))
    expect_betlink_error(
        after, 401, "INVALID_SESSION", probe="a launchToken issued before a block and unblock: "
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
    wrong = success_fields(sent, response, session_ms=d.options.session_ms)
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


async def replay_token_live(d: Deployment) -> None:
    """A replay returns the stored token and leaves it live: BetLink may retry any call."""
    launch, key = await d.launch_token(), new_key()
    first = await d.authenticate(auth_body(launch), key=key)
    expect_status(first, 200, "first use of the key")
    expect_status(await d.authenticate(auth_body(launch), key=key), 200, "the same key again")
    token = str(first.json()["operatorSessionToken"])
    expect_body(await d.introspect(token), live_session(d, first.json()), "introspection after a replay")


VOLATILE_HEADERS = frozenset({"date", "x-request-id"})


async def replay_headers(d: Deployment) -> None:
    """Every header of a replay as the first answer's (the date and request id aside): no-store too."""
    launch, key = await d.launch_token(), new_key()
    first = await d.authenticate(auth_body(launch), key=key)
    expect_status(first, 200, "first use of the key")
    again = await d.authenticate(auth_body(launch), key=key)
    expect_status(again, 200, "the same key again")

    def kept(answer: httpx.Response) -> dict[str, list[str]]:
        names = sorted(set(answer.headers.keys()) - VOLATILE_HEADERS)
        return {name: answer.headers.get_list(name) for name in names}

    if kept(again) != kept(first) or not is_no_store(again):
        raise Failed(f"the replay's headers: {kept(first)}, with Cache-Control: no-store", str(kept(again)))


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
    """Rounds of M keys at once on one fresh launch token each: one 200 per round, every round."""
    count, rounds, latencies = d.options.parallel_keys, d.options.parallel_rounds, []
    for round_ in range(1, rounds + 1):
        launch = await d.launch_token()
        headers = {"Content-Type": "application/json", "X-API-Key": d.betlink_key}
        requests = [
            ({**headers, "X-Idempotency-Key": new_key()}, json.dumps(auth_body(launch)).encode())
            for _ in range(count)
        ]
        answers = await d.race("POST", "/betlink/authenticate", requests)
        latencies += d.latencies
        winners = [a for a in answers if a.status_code == 200]
        if len(winners) != 1:
            raise Failed(
                f"{count} parallel keys, one launchToken: exactly one 200 (round {round_} of {rounds})",
                f"{len(winners)} answered 200",
            )
        for loser in (a for a in answers if a.status_code != 200):
            expect_betlink_error(loser, 401, "INVALID_SESSION", probe=f"round {round_}, the others: ")
    return percentiles(latencies)


async def key_expiry(d: Deployment) -> None:
    """A processed key is replayed until IDEMPOTENCY_TTL_SECONDS, then evaluated afresh."""
    ttl = opted_in(d.options.idempotency_ttl, "--idempotency-ttl", "idempotency-key expiry")

    async def first() -> tuple[LaunchToken, str, httpx.Response]:
        launch, key = await d.launch_token(), new_key()
        answer = await d.authenticate(auth_body(launch), key=key)
        expect_status(answer, 200, "first use of the key")
        return launch, key, answer

    async def replayed(used: tuple[LaunchToken, str, httpx.Response]) -> httpx.Response | None:
        again = await d.authenticate(auth_body(used[0]), key=used[1])
        return None if again.status_code == 200 and again.content == used[2].content else again

    lived = await alive_just_before(ttl, "a processed key (its replay byte for byte)", first, replayed)
    await until(lived.received + ttl + EXPIRY_MARGIN_SECONDS)
    launch, key, _ = lived.value
    expect_betlink_error(
        await d.authenticate(auth_body(launch), key=key),
        401,
        "INVALID_SESSION",
        probe=f"the key {ttl + EXPIRY_MARGIN_SECONDS:g} s later (--idempotency-ttl {ttl:g}), token used: ",
    )

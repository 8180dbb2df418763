"""The casino gateway's routes: the wallet's view of a session (introspect, its expiry), block
and unblock, the gateway key on every route, and the body cap."""

from __future__ import annotations

import json
from typing import Any

import httpx

from partner_gateway.certify.client import Deployment, auth_body, json_or_none, random_token
from partner_gateway.certify.expectations import (
    EXPIRY_MARGIN_SECONDS,
    alive_just_before,
    blocked,
    expect_betlink_error,
    expect_body,
    expect_problem,
    expect_status,
    live_session,
    opted_in,
    until,
)

OVER_THE_CAP_BYTES = 200_000  # above any sane MAX_BODY_BYTES (the contract's default is 64 KiB)


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


async def block_revokes_session(d: Deployment) -> None:
    """A block revokes the player's session tokens for good: an unblock does not revive them."""
    session = await d.exchange(await d.launch_token())
    async with blocked(d):
        pass
    after = await d.introspect(session["operatorSessionToken"])
    expect_body(after, {"active": False}, "a session token issued before a block and unblock")


async def session_expiry(d: Deployment) -> None:
    """An operatorSessionToken is live until BETLINK_SESSION_TTL_SECONDS, then inactive."""
    ttl = opted_in(d.options.session_ttl, "--session-ttl", "session-token expiry")

    async def session() -> dict[str, Any]:
        return await d.exchange(await d.launch_token())

    async def live(body: dict[str, Any]) -> httpx.Response | None:
        answer = await d.introspect(body["operatorSessionToken"])
        return None if answer.status_code == 200 and json_or_none(answer) == live_session(d, body) else answer

    lived = await alive_just_before(ttl, "an operatorSessionToken (introspected)", session, live)
    await until(lived.received + ttl + EXPIRY_MARGIN_SECONDS)
    expect_body(
        await d.introspect(lived.value["operatorSessionToken"]),
        {"active": False},
        f"introspection {ttl + EXPIRY_MARGIN_SECONDS:g} s after the exchange (--session-ttl {ttl:g})",
    )


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


# --- the casino gateway's key, on every route ------------------------------------------------


def gateway_routes(d: Deployment) -> list[tuple[str, str, dict[str, Any]]]:
    routes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/betlink/session", {}),
        ("POST", "/betlink/sessions/introspect", {"json": {"operatorSessionToken": random_token() * 2}}),
        ("PUT", d.block_path(), {}),
        ("DELETE", d.block_path(), {}),
    ]
    if d.options.bidpaw:
        routes.append(("GET", "/bidpaw/open-session", {"params": {"nick": "Certify"}}))
    return routes


async def gateway_key(d: Deployment) -> None:
    """No key, a wrong key and BetLink's key are each 401 on every route of the casino gateway."""
    try:
        for method, path, extra in gateway_routes(d):
            for probe, value in (
                ("no Authorization", None),
                ("a wrong key", "Bearer certify-not-a-key"),
                ("BetLink's key", f"Bearer {d.betlink_key}"),
            ):
                headers = {"X-User-Id": d.player} | ({} if value is None else {"Authorization": value})
                answer = await d.request(method, path, headers=headers, **extra)
                expect_problem(answer, 401, probe=f"{method} {path} with {probe}: ")
    finally:
        await d.block(blocked=False)  # a PUT let through must not leave the player blocked


# --- body limits --------------------------------------------------------------------------------


def padded(body: dict[str, Any], size: int = OVER_THE_CAP_BYTES) -> bytes:
    """A valid JSON body made larger than the cap with whitespace: only the cap can refuse it."""
    text = json.dumps(body).encode()
    return text[:-1] + b" " * max(0, size - len(text)) + b"}"


async def body_cap(d: Deployment) -> None:
    """A body over the cap is refused on each route that reads one, in that route's shape."""
    launch = await d.launch_token()
    auth = await d.authenticate(padded(auth_body(launch)))
    expect_betlink_error(
        auth, 400, "MISSING_PARAMETER", probe=f"{OVER_THE_CAP_BYTES} bytes to /betlink/authenticate: "
    )
    headers = {**d.gateway(), "Content-Type": "application/json"}
    big = padded({"operatorSessionToken": random_token() * 2})
    introspect = await d.request("POST", "/betlink/sessions/introspect", headers=headers, content=big)
    expect_problem(introspect, 413, probe=f"{OVER_THE_CAP_BYTES} bytes to /betlink/sessions/introspect: ")

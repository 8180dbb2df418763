"""BidPaw's open-session route (`certify --bidpaw`), as the contract has it and as BidPaw
documents it today."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from partner_gateway.certify.client import Deployment, Failed, describe, json_or_none
from partner_gateway.certify.expectations import blocked, expect_problem, expect_status, is_no_store

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

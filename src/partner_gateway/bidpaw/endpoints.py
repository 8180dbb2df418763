"""BidPaw route: the casino frontend, through the gateway, gets the link that opens BidPaw's lobby."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from partner_gateway import store
from partner_gateway.bidpaw.client import NEEDED_SETTINGS, BidPawClient
from partner_gateway.config import COUNTRY_CODE
from partner_gateway.db import Database, utc_now
from partner_gateway.errors import BadRequest, PlayerBlocked, ServiceUnavailable
from partner_gateway.openapi import problem_responses
from partner_gateway.security import GatewayCaller, PlayerId, SingleGatewayHeaders

MAX_NICK_CHARS = 256
LANG = re.compile(r"[A-Za-z-]{2,8}")

# BidPaw's supported currencies, as its Open Session page lists them (May 2025). BidPaw keeps the
# first currency it is sent for a player for good, so anything else is refused before the call.
CURRENCIES = frozenset(
    "USDT UYU VES ZAR PKR PLN PYG RUB SEK SVC THB TND TRY USD INR JPY KZT LKR MXN NGN NOK NZD PEN PHP "
    "CNY COP CRC CZK DOP EUR GBP GEL HNL HUF AMD AUD AZN BDT BRL CAD CHF CLP".split()
)

router = APIRouter(prefix="/bidpaw", tags=["bidpaw"], dependencies=[SingleGatewayHeaders])


class OpenSessionResponse(BaseModel):
    """BidPaw's lobby link for this player; its query carries BidPaw's session token."""

    model_config = ConfigDict(
        populate_by_name=True,
        frozen=True,
        json_schema_extra={
            "examples": [
                {"iframeURL": "https://bidpaw.example/de/auctions?token=...&session=...&casinoId=casino-1"}
            ]
        },
    )

    iframe_url: str = Field(
        alias="iframeURL", title="iframe URL", examples=["https://bidpaw.example/auctions?token=..."]
    )


@dataclass(frozen=True)
class OpenSessionInput:
    """What the gateway said about the player, checked; `None` where nothing was sent."""

    country: str | None
    currency: str | None
    nick: str | None
    lang: str | None


def _header(request: Request, name: bytes, spelled: str) -> str | None:
    """The header's value (it comes once: SingleGatewayHeaders saw to it); an empty one is a 400."""
    raw = next((value for key, value in request.headers.raw if key == name), None)
    if raw is None:
        return None
    if not raw:
        raise BadRequest(f"{spelled} must not be empty: leave it out when the value is not known")
    # Checked as ASCII letters before any upper(): str.upper() turns U+0131 into I, ß into SS.
    return raw.decode("latin-1")


def _country(request: Request) -> str | None:
    value = _header(request, b"x-user-country", "X-User-Country")
    if value is not None and not COUNTRY_CODE.fullmatch(value):
        raise BadRequest("X-User-Country must be an ISO 3166-1 alpha-2 code: two letters, e.g. DE")
    return value.upper() if value else None


def _currency(request: Request) -> str | None:
    value = _header(request, b"x-user-currency", "X-User-Currency")
    if value is not None and not (value.isascii() and value.isalpha() and value.upper() in CURRENCIES):
        raise BadRequest("X-User-Currency must be one of the 42 currencies BidPaw supports, e.g. EUR")
    return value.upper() if value else None


def _query(request: Request, name: str) -> str | None:
    """The query parameter, once at most; an empty value is the same as none."""
    values = [value for key, value in request.query_params.multi_items() if key == name]
    if len(values) > 1:
        raise BadRequest(f"{name} must be sent at most once")
    return values[0] if values and values[0] else None


def _nick(request: Request) -> str | None:
    nick = _query(request, "nick")
    if nick is not None and len(nick) > MAX_NICK_CHARS:
        raise BadRequest(f"nick must be at most {MAX_NICK_CHARS} characters")
    return nick


def _lang(request: Request) -> str | None:
    lang = _query(request, "lang")
    if lang is not None and not LANG.fullmatch(lang):
        raise BadRequest("lang must be 2 to 8 ASCII letters and hyphens, e.g. en or pt-BR")
    return lang


async def open_session_input(request: Request) -> OpenSessionInput:
    """The contract's checks after X-User-Id, in its order: country, currency, nick, lang."""
    return OpenSessionInput(
        country=_country(request), currency=_currency(request), nick=_nick(request), lang=_lang(request)
    )


OpenSessionInputDep = Annotated[OpenSessionInput, Depends(open_session_input)]

# The endpoint reads these itself (raw, so a repeated or empty one is a 400 in the contract's
# order, never FastAPI's 422); this is how OpenAPI shows them.
OPEN_SESSION_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "X-User-Country",
        "in": "header",
        "required": False,
        "description": "The player's country as the casino knows it (never from the browser): ISO "
        "3166-1 alpha-2, two ASCII letters, any case, sent to BidPaw upper-case. Leave it out when "
        "unknown; empty, malformed or sent twice is a 400.",
        "schema": {"type": "string", "pattern": "^[A-Za-z]{2}$", "title": "Player country"},
        "example": "DE",
    },
    {
        "name": "X-User-Currency",
        "in": "header",
        "required": False,
        "description": "The player's wallet currency as the casino knows it (never from the browser): "
        "one of BidPaw's 42 currencies, any case, sent upper-case. BidPaw keeps the first currency "
        "it sees for a player for good. Leave it out when unknown; empty, unsupported or sent twice "
        "is a 400.",
        "schema": {"type": "string", "enum": sorted(CURRENCIES), "title": "Player currency"},
        "example": "EUR",
    },
    {
        "name": "nick",
        "in": "query",
        "required": False,
        "description": "The player's display name, up to 256 characters; empty is the same as absent.",
        "schema": {"type": "string", "maxLength": MAX_NICK_CHARS, "title": "Nick"},
        "example": "Jöhn",
    },
    {
        "name": "lang",
        "in": "query",
        "required": False,
        "description": "BidPaw's UI language: 2 to 8 ASCII letters and hyphens, passed as given "
        "(BidPaw falls back to en for one it does not support); empty is the same as absent.",
        "schema": {"type": "string", "pattern": "^[A-Za-z-]{2,8}$", "title": "Language"},
        "example": "de",
    },
]


async def _is_blocked(request: Request, *, user_id: str) -> bool:
    # A connection of its own, returned at once: the request must not hold a pooled connection
    # (and an open transaction) while it waits up to BIDPAW_TIMEOUT_SECONDS for BidPaw. Its
    # waits are bounded by the Database's deadline like every other request's.
    database: Database = request.app.state.database
    async with database.statement() as conn:
        return await store.is_blocked(conn, user_id=user_id)


async def _record(
    request: Request, *, user_id: str, game_id: str, currency: str | None, iframe_url: str
) -> None:
    # After BidPaw's answer, again a short statement of its own. Should it fail, the caller gets
    # a 503, not the link: a lobby without its record would have its wallet callbacks refused.
    database: Database = request.app.state.database
    async with database.statement() as conn:
        await store.record_bidpaw_session(
            conn,
            user_id=user_id,
            game_id=game_id,
            currency=currency,
            session=session_of(iframe_url),
            now=utc_now(),
        )


def session_of(iframe_url: str) -> str | None:
    """The iframe URL's `session` query value (BidPaw's sessionId in its callbacks), if any."""
    values = [value for key, value in parse_qsl(urlsplit(iframe_url).query) if key == "session"]
    return values[0] if values else None


def _bidpaw(request: Request) -> BidPawClient:
    client: BidPawClient | None = getattr(request.app.state, "bidpaw", None)
    if client is None:
        raise ServiceUnavailable(f"BidPaw is not configured ({NEEDED_SETTINGS})")
    return client


@router.get(
    "/open-session",
    response_model=OpenSessionResponse,
    responses=problem_responses(400, 401, 403, 502, 503, 504),
    openapi_extra={"parameters": OPEN_SESSION_PARAMETERS},
)
async def open_session(
    request: Request,
    response: Response,
    caller: GatewayCaller,
    user_id: PlayerId,
    given: OpenSessionInputDep,
) -> OpenSessionResponse:
    """BidPaw's lobby link (`iframeURL`) for the player, from BidPaw's signed open-session call.

    A repeated identity header is refused first. Then checks in order: gateway key (401),
    `X-User-Id`, `X-User-Country`, `X-User-Currency` (a currency BidPaw does not support too),
    `nick`, `lang` (400), player blocked (403), BidPaw configured (503). Then 502 when BidPaw
    rejects (4xx), fails (5xx), cannot be reached or answers anything but a JSON object with an
    absolute https `iframeURL`; 504 when it accepted the connection but did not answer within
    BIDPAW_TIMEOUT_SECONDS. Every 200 is recorded (player, gameId, currency, the URL's `session`).
    """
    if await _is_blocked(request, user_id=user_id):
        raise PlayerBlocked("the player is blocked")
    bidpaw = _bidpaw(request)
    iframe_url = await bidpaw.open_session(
        user_id=user_id, nick=given.nick, lang=given.lang, currency=given.currency, country=given.country
    )
    await _record(
        request, user_id=user_id, game_id=bidpaw.game_id, currency=given.currency, iframe_url=iframe_url
    )
    response.headers["Cache-Control"] = "no-store"
    return OpenSessionResponse(iframe_url=iframe_url)

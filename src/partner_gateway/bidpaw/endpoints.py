"""BidPaw route: the casino frontend, through the gateway, gets the link that opens BidPaw's lobby."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from partner_gateway import store
from partner_gateway.bidpaw.client import BidPawClient
from partner_gateway.db import Database
from partner_gateway.errors import PlayerBlocked, ServiceUnavailable
from partner_gateway.openapi import problem_responses
from partner_gateway.security import GatewayCaller, PlayerId, SingleGatewayHeaders

MAX_NICK_CHARS = 256

router = APIRouter(prefix="/bidpaw", tags=["bidpaw"], dependencies=[SingleGatewayHeaders])


class OpenSessionResponse(BaseModel):
    """BidPaw's lobby link for this player; its query carries BidPaw's session token."""

    model_config = ConfigDict(
        populate_by_name=True,
        frozen=True,
        json_schema_extra={
            "examples": [{"iframeURL": "https://bidpaw.example/auctions?token=...&casinoId=casino-1"}]
        },
    )

    iframe_url: str = Field(
        alias="iframeURL", title="iframe URL", examples=["https://bidpaw.example/auctions?token=..."]
    )


Nick = Annotated[
    str | None,
    Query(max_length=MAX_NICK_CHARS, description="The player's display name; empty is the same as absent."),
]


async def _is_blocked(request: Request, *, user_id: str) -> bool:
    # A connection of its own, returned at once: the request must not hold a pooled connection
    # (and an open transaction) while it waits up to BIDPAW_TIMEOUT_SECONDS for BidPaw. Its
    # waits are bounded by the Database's deadline like every other request's.
    database: Database = request.app.state.database
    async with database.statement() as conn:
        return await store.is_blocked(conn, user_id=user_id)


def _bidpaw(request: Request) -> BidPawClient:
    client: BidPawClient | None = getattr(request.app.state, "bidpaw", None)
    if client is None:
        raise ServiceUnavailable(
            "BidPaw is not configured (BIDPAW_API_URL, BIDPAW_CLIENT_ID, BIDPAW_SECRET_KEY)"
        )
    return client


@router.get(
    "/open-session",
    response_model=OpenSessionResponse,
    responses=problem_responses(400, 401, 403, 502, 503, 504),
)
async def open_session(
    request: Request,
    response: Response,
    caller: GatewayCaller,
    user_id: PlayerId,
    nick: Nick = None,
) -> OpenSessionResponse:
    """BidPaw's lobby link (`iframeURL`) for the player, from BidPaw's signed open-session call.

    Checks in order: gateway key (401), `X-User-Id` (400), player blocked (403), BidPaw configured
    (503). Then 502 when BidPaw rejects (4xx), fails (5xx), cannot be reached or answers anything
    but a JSON object with an absolute https `iframeURL`; 504 when it accepted the connection but
    did not answer within BIDPAW_TIMEOUT_SECONDS. An empty `nick` is the same as none.
    """
    if await _is_blocked(request, user_id=user_id):
        raise PlayerBlocked("the player is blocked")
    iframe_url = await _bidpaw(request).open_session(user_id=user_id, nick=nick or None)
    response.headers["Cache-Control"] = "no-store"
    return OpenSessionResponse(iframe_url=iframe_url)

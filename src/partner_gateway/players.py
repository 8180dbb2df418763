"""Blocking players (self-exclusion, compliance holds): PUT/DELETE /players/{userId}/block."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Depends, Path, Request, Response, status

from partner_gateway import store
from partner_gateway.db import DatabaseDep, utc_now
from partner_gateway.errors import BadRequest, NotFound
from partner_gateway.logs import get_logger
from partner_gateway.openapi import problem_responses
from partner_gateway.security import GatewayCaller, SingleGatewayHeaders, check_user_id

router = APIRouter(prefix="/players", tags=["players"], dependencies=[SingleGatewayHeaders])
logger = get_logger(__name__)

PREFIX, SUFFIX = b"/players/", b"/block"


async def path_player_id(
    request: Request,
    user_id: Annotated[str, Path(alias="userId", description="The player's id, percent-encoded UTF-8.")],
) -> str:
    """The player id from the raw path: percent-decoded as strict UTF-8 (a `/` in an id arrives
    as %2F), under the same rules as `X-User-Id`.

    The router matched the percent-decoded path, so `/%70layers/x/block` or `/players/x/bloc%6B`
    got here too. A compliance control fails closed: only a raw path spelled exactly
    `/players/{userId}/block` counts, anything else is 404 and blocks nobody.
    """
    raw: bytes = (request.scope.get("raw_path") or b"").partition(b"?")[0]  # ASGITransport keeps it
    if not (raw.startswith(PREFIX) and raw.endswith(SUFFIX)):
        raise NotFound("no such resource")
    raw = raw[len(PREFIX) : -len(SUFFIX)]
    try:
        return check_user_id(unquote_to_bytes(raw).decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the user id must be percent-encoded UTF-8") from None


UserIdPath = Annotated[str, Depends(path_player_id)]


@router.put(
    "/{userId:path}/block",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(400, 401, 404, 503),
)
async def block(caller: GatewayCaller, user_id: UserIdPath, db: DatabaseDep) -> None:
    """Block a player at once: every live launch and session token is revoked in the same
    transaction, and new sessions are refused until unblocked. Idempotent; works for a player
    the service has never seen."""
    async with db.transaction() as conn:
        revoked = await store.set_blocked(
            conn, user_id=user_id, blocked=True, actor=caller.label, now=utc_now()
        )
    logger.info("player.blocked", actor=caller.label, sessions_revoked=revoked)


@router.delete(
    "/{userId:path}/block",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(400, 401, 404, 503),
)
async def unblock(caller: GatewayCaller, user_id: UserIdPath, db: DatabaseDep) -> None:
    """Let the player start new sessions. Tokens revoked by the block stay revoked. Idempotent."""
    async with db.transaction() as conn:
        await store.set_blocked(conn, user_id=user_id, blocked=False, actor=caller.label, now=utc_now())
    logger.info("player.unblocked", actor=caller.label)

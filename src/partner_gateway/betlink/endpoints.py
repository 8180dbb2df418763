"""BetLink routes: thin parse → service → answer."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from partner_gateway.betlink import service
from partner_gateway.betlink.schemas import LaunchTokenResponse
from partner_gateway.db import DbDep, utc_now
from partner_gateway.openapi import problem_responses
from partner_gateway.security import GatewayCaller, PlayerId, SettingsDep, UserIdCipher

router = APIRouter(prefix="/betlink", tags=["betlink"])


def _cipher(request: Request) -> UserIdCipher:
    cipher: UserIdCipher = request.app.state.user_id_cipher
    return cipher


@router.post(
    "/session",
    status_code=status.HTTP_201_CREATED,
    response_model=LaunchTokenResponse,
    responses=problem_responses(400, 401, 403, 503),
)
async def create_launch_token(
    request: Request,
    response: Response,
    caller: GatewayCaller,
    user_id: PlayerId,
    settings: SettingsDep,
    conn: DbDep,
) -> LaunchTokenResponse:
    """BetLink's Session endpoint: a new user session with a short-lived, single-use launch token.

    Checks in order: gateway key (401), `X-User-Id` (400), player blocked (403).
    """
    issued = await service.issue_launch_token(
        conn, user_id=user_id, settings=settings, cipher=_cipher(request), now=utc_now()
    )
    response.headers["Cache-Control"] = "no-store"
    assert settings.betlink_operator_id is not None
    return LaunchTokenResponse(
        launch_token=issued.token, user_id=issued.betlink_user_id, operator_id=settings.betlink_operator_id
    )

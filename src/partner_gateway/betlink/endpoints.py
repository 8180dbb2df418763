"""BetLink routes: thin parse → service → answer."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ValidationError

from partner_gateway.betlink import service
from partner_gateway.betlink.schemas import (
    UUID_PATTERN,
    AuthenticateFailure,
    AuthenticateRequest,
    AuthenticateResponse,
    IntrospectRequest,
    IntrospectResponse,
    LaunchTokenResponse,
)
from partner_gateway.config import Settings
from partner_gateway.db import Database, utc_now
from partner_gateway.errors import BadRequest, BetLinkError, ServiceError
from partner_gateway.logs import get_logger
from partner_gateway.metrics import BETLINK_AUTH
from partner_gateway.openapi import problem_responses
from partner_gateway.security import (
    Sealer,
    UserIdCipher,
    gateway_caller,
    match_key,
    player_id,
    runs_itself,
    single_betlink_headers,
    single_gateway_headers,
)

Body = TypeVar("Body", bound=BaseModel)

router = APIRouter(prefix="/betlink", tags=["betlink"])
NO_STORE = {"Cache-Control": "no-store"}  # every answer that carries a token
logger = get_logger(__name__)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body the endpoint reads itself (so that its checks keep the contract's order)."""
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _cipher(request: Request) -> UserIdCipher:
    cipher: UserIdCipher = request.app.state.user_id_cipher
    return cipher


# The three routes read the settings and the database from the app's state, await their checks
# themselves (security.runs_itself) rather than declaring them as dependencies, and build their
# answer's bytes themselves: FastAPI's dependency solving and response-model serialization were
# a quarter of a /betlink/session request's CPU.
def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


@router.post(
    "/session",
    status_code=status.HTTP_201_CREATED,
    response_model=LaunchTokenResponse,
    responses=problem_responses(400, 401, 403, 503),
)
@runs_itself(single_gateway_headers, gateway_caller, player_id)
async def create_launch_token(request: Request) -> Response:
    """BetLink's Session endpoint: a new user session with a short-lived, single-use launch token.

    Checks in order: headers sent more than once (401, 400), gateway key (401), `X-User-Id`
    (400), player blocked (403).
    """
    await single_gateway_headers(request)
    await gateway_caller(request)
    user_id = await player_id(request)
    settings = _settings(request)
    async with _database(request).statement() as conn:  # one statement: its own transaction
        issued = await service.issue_launch_token(
            conn, user_id=user_id, settings=settings, cipher=_cipher(request), now=utc_now()
        )
    logger.info("betlink.session_issued", user_id=user_id)
    assert settings.betlink_operator_id is not None
    answer = LaunchTokenResponse(
        launch_token=issued.token, user_id=issued.betlink_user_id, operator_id=settings.betlink_operator_id
    )
    return Response(
        answer.model_dump_json(by_alias=True),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers=NO_STORE,
    )


@router.post(
    "/sessions/introspect",
    response_model=IntrospectResponse,
    response_model_exclude_none=True,
    responses=problem_responses(400, 401, 413, 503),
    openapi_extra=_json_body(IntrospectRequest),
)
@runs_itself(single_gateway_headers, gateway_caller)
async def introspect(request: Request) -> Response:
    """For the operator's wallet: is the `sessionToken` BetLink presents on a bet live, and whose?

    Answers `{"active": false}` for an unknown, expired or revoked token or a blocked player.
    The gateway key is checked (401) before the body is read (400).
    """
    await single_gateway_headers(request)
    await gateway_caller(request)
    body = _parse(IntrospectRequest, await request.body(), error=BadRequest)
    async with _database(request).statement() as conn:
        live = await service.introspect(conn, token=body.operator_session_token, now=utc_now())
    answer = (
        IntrospectResponse(active=False)
        if live is None
        else IntrospectResponse(
            active=True, user_id=live.user_id, session_expiry=service.epoch_ms(live.expires_at)
        )
    )
    return Response(
        answer.model_dump_json(by_alias=True, exclude_none=True),
        media_type="application/json",
        headers=NO_STORE,
    )


def _failure(description: str) -> dict[str, Any]:
    return {"model": AuthenticateFailure, "description": description}


@router.post(
    "/authenticate",
    response_model=AuthenticateResponse,
    responses={
        400: _failure("MISSING_PARAMETER, INVALID_USER or USER_BLOCKED"),
        401: _failure("INVALID_SESSION"),
        403: _failure("AUTHENTICATION_FAILED"),
        500: _failure("GENERAL_EXCEPTION"),
        503: _failure("REQUEST_TIMED_OUT"),
    },
    openapi_extra=_json_body(AuthenticateRequest),
)
@runs_itself(single_betlink_headers)
async def authenticate(request: Request) -> Response:
    """BetLink's Auth endpoint: exchange a launch token for a 30-minute operatorSessionToken.

    Checks in the contract's order: API key (403 AUTHENTICATION_FAILED); idempotency key and
    body shape (400 MISSING_PARAMETER); operatorId (403); the key used for another request
    (403); the key already answered (the stored 200, byte for byte); no such launch token (401
    INVALID_SESSION); userId not the session's player (400 INVALID_USER); player blocked (400
    USER_BLOCKED); token expired, revoked or used (401 INVALID_SESSION); database too slow (503
    REQUEST_TIMED_OUT). Errors use BetLink's shape.
    """
    await single_betlink_headers(request)
    settings = _settings(request)
    headers = request.headers  # read here, not as parameters (see _settings); duplicates refused
    if match_key(headers.get("x-api-key"), settings.betlink_api_keys) is None:
        raise BetLinkError("AUTHENTICATION_FAILED", "missing or invalid X-API-Key")
    key = _idempotency_key(headers.get("x-idempotency-key"))
    auth_request = _parse(AuthenticateRequest, await request.body(), error=_missing_parameter)
    sealer: Sealer = request.app.state.sealer
    async with _database(request).transaction() as conn:  # commits before the response is sent
        result = await service.authenticate(
            conn,
            request=auth_request,
            idempotency_key=key,
            settings=settings,
            cipher=_cipher(request),
            sealer=sealer,
            now=utc_now(),
        )
    outcome = "REPLAYED" if result.replayed else "AUTHENTICATED"
    BETLINK_AUTH.labels(outcome).inc()
    logger.info(
        "betlink.replayed" if result.replayed else "betlink.authenticated", user_id=auth_request.user_id
    )
    return Response(result.body, media_type="application/json", headers=NO_STORE)


def _idempotency_key(value: str | None) -> uuid.UUID:
    if value is None or not re.match(UUID_PATTERN, value):
        raise BetLinkError("MISSING_PARAMETER", "X-Idempotency-Key must be a UUID")
    return uuid.UUID(value)


def _missing_parameter(detail: str) -> BetLinkError:
    return BetLinkError("MISSING_PARAMETER", detail)


def _parse(model: type[Body], raw: bytes, *, error: Callable[[str], ServiceError]) -> Body:
    """Validate a JSON body strictly (no lone surrogates, no coercion); the message names the
    field and the rule, never the input."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise error(f"{where}: {first['msg']}") from None

"""BetLink's wire models: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class LaunchTokenResponse(CamelModel):
    """Exactly what the frontend hands the BetLink iframe in `betlink-operator-auth-token-response`."""

    launch_token: str
    user_id: str
    operator_id: str


UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class AuthenticateRequest(CamelModel):
    """BetLink's Auth request. Strict: every field a non-empty string, no coercion."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, strict=True)

    request_id: Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
    user_id: Annotated[str, StringConstraints(min_length=1)]
    operator_id: Annotated[str, StringConstraints(min_length=1)]
    launch_token: Annotated[str, StringConstraints(min_length=1)]
    auth_requested_timestamp: Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]


class AuthenticateResponse(CamelModel):
    """BetLink's Auth success body: exactly these eight strings, in this order."""

    request_id: str
    user_id: str
    operator_id: str
    operator_session_token: str
    timestamp: str
    status: Literal["AUTHENTICATED"] = "AUTHENTICATED"
    session_expiry: str
    redirect_url: str


class AuthenticateFailure(BaseModel):
    """BetLink's Auth error body."""

    status: Literal["FAILED_AUTHENTICATION"]
    errorCode: Literal[
        "INVALID_USER",
        "USER_BLOCKED",
        "MISSING_PARAMETER",
        "INVALID_SESSION",
        "AUTHENTICATION_FAILED",
        "GENERAL_EXCEPTION",
        "REQUEST_TIMED_OUT",
    ]
    errorMessage: str


class IntrospectRequest(CamelModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, strict=True)

    operator_session_token: str


class IntrospectResponse(CamelModel):
    """`{"active": false}` exactly, or the live session's real user id and expiry (epoch ms)."""

    active: bool
    user_id: str | None = None
    session_expiry: str | None = None

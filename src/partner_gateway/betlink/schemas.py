"""BetLink's wire models: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic.alias_generators import to_camel
from pydantic.fields import ComputedFieldInfo, FieldInfo


def field_title(name: str, info: FieldInfo | ComputedFieldInfo) -> str:
    """A field's title in the OpenAPI description, in words: `operator_session_token` and
    `errorCode` become "Operator session token" and "Error code"."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").lower()
    return words[:1].upper() + words[1:]


def _config(example: dict[str, Any], *, strict: bool = False) -> ConfigDict:
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=strict,
        field_title_generator=field_title,
        json_schema_extra={"examples": [example]},
    )


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, field_title_generator=field_title
    )


class LaunchTokenResponse(CamelModel):
    """Exactly what the frontend hands the BetLink iframe in `betlink-operator-auth-token-response`."""

    model_config = _config(
        {"launchToken": "3-Iqf8PeJUXpesjTLBAPpg", "userId": "u1", "operatorId": "local-operator"}
    )

    launch_token: str
    user_id: str
    operator_id: str


UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class AuthenticateRequest(CamelModel):
    """BetLink's Auth request. Strict: every field a non-empty string, no coercion."""

    model_config = _config(
        {
            "requestId": "92e02ae9-a2a3-48e2-af0e-940aec4bbcfb",
            "userId": "u1",
            "operatorId": "local-operator",
            "launchToken": "3-Iqf8PeJUXpesjTLBAPpg",
            "authRequestedTimestamp": "1764091445123",
        },
        strict=True,
    )

    request_id: Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
    user_id: Annotated[str, StringConstraints(min_length=1)]
    operator_id: Annotated[str, StringConstraints(min_length=1)]
    launch_token: Annotated[str, StringConstraints(min_length=1)]
    auth_requested_timestamp: Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]


class AuthenticateResponse(CamelModel):
    """BetLink's Auth success body: exactly these eight strings, in this order."""

    model_config = _config(
        {
            "requestId": "92e02ae9-a2a3-48e2-af0e-940aec4bbcfb",
            "userId": "u1",
            "operatorId": "local-operator",
            "operatorSessionToken": "Qm9yZWQtc2Vzc2lvbi10b2tlbi1leGFtcGxlLTI1Ni1iaXRz",
            "timestamp": "1764091445321",
            "status": "AUTHENTICATED",
            "sessionExpiry": "1764093245321",
            "redirectUrl": "http://localhost:8000/",
        }
    )

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

    model_config = ConfigDict(
        field_title_generator=field_title,
        json_schema_extra={
            "examples": [
                {
                    "status": "FAILED_AUTHENTICATION",
                    "errorCode": "INVALID_SESSION",
                    "errorMessage": "the launch token has expired",
                }
            ]
        },
    )

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
    """The token BetLink presented to the wallet as `sessionToken`."""

    model_config = _config(
        {"operatorSessionToken": "Qm9yZWQtc2Vzc2lvbi10b2tlbi1leGFtcGxlLTI1Ni1iaXRz"}, strict=True
    )

    operator_session_token: str


class IntrospectResponse(CamelModel):
    """`{"active": false}` exactly, or the live session's real user id and expiry (epoch ms)."""

    model_config = _config({"active": True, "userId": "u1", "sessionExpiry": "1764093245321"})

    active: bool
    user_id: str | None = None
    session_expiry: str | None = None

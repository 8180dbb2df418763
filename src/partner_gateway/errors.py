"""Typed service errors and their two renderings.

Every route answers RFC 9457 problem+json, except BetLink's Auth endpoint, which answers
BetLink's own `{"status": "FAILED_AUTHENTICATION", "errorCode", "errorMessage"}`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, ClassVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from partner_gateway.logs import get_logger
from partner_gateway.metrics import BETLINK_AUTH

logger = logging.getLogger(__name__)
event_logger = get_logger("partner_gateway.betlink")

AUTHENTICATE_PATH = "/betlink/authenticate"
PROBLEM_JSON = "application/problem+json"


class ServiceError(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    betlink_code: ClassVar[str] = "GENERAL_EXCEPTION"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ServiceError):
    status = 400
    title = "Bad Request"
    betlink_code = "MISSING_PARAMETER"


class Unauthorized(ServiceError):
    status = 401
    title = "Unauthorized"


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"


class NotFound(ServiceError):
    status = 404
    title = "Not Found"


class PlayerBlocked(Forbidden):
    title = "Player blocked"


class ServiceUnavailable(ServiceError):
    status = 503
    title = "Service Unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    title = "Database unavailable"
    betlink_code = "REQUEST_TIMED_OUT"


class BadGateway(ServiceError):
    status = 502
    title = "Bad Gateway"


class GatewayTimeout(ServiceError):
    status = 504
    title = "Gateway Timeout"


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body is read, so it reaches the handlers whoever reads it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BetLinkError(ServiceError):
    """An answer of BetLink's error table; the HTTP status follows from the code."""

    STATUS_BY_CODE: ClassVar[dict[str, int]] = {
        "INVALID_USER": 400,
        "USER_BLOCKED": 400,
        "MISSING_PARAMETER": 400,
        "INVALID_SESSION": 401,
        "AUTHENTICATION_FAILED": 403,
        "GENERAL_EXCEPTION": 500,
        "REQUEST_TIMED_OUT": 503,
    }

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code

    @property
    def http_status(self) -> int:
        return self.STATUS_BY_CODE[self.code]


# SQLSTATEs that mean "the database could not answer now; retry" rather than "our bug": lock and
# statement timeouts, shutdowns, too many connections, and the two conflicts a retry resolves,
# serialization failure (40001) and deadlock (40P01). Class 08 (connection exceptions) too, and
# 25006 (read_only_sql_transaction): the server is a standby now, a failover is under way.
_RETRYABLE_SQLSTATES = {"55P03", "57014", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "25006"}

# After these, the server a connection is on is no longer a writable primary, or is going away:
# 25006 (a standby, or a demoted primary behind a moved DNS name), 57P01-57P03 (shut down,
# crashed, not accepting connections yet), class 08, a broken socket, no writable host at all.
_SERVER_LOST_SQLSTATES = {"25006", "57P01", "57P02", "57P03"}


def server_lost(exc: BaseException) -> bool:
    """True when no pooled connection to this server should be used again: the pool drops them
    all and its next connections look for the primary anew. A statement or lock timeout is not
    that; a connection closed under a statement is (the server went away). A connection the
    request's own deadline cut is not judged here (`Database` ends that one connection only)."""
    if isinstance(exc, TimeoutError):  # an OSError too, but a wait that ran out: a busy pool, a slow server
        return False
    if isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.ConnectionDoesNotExistError
        | asyncpg.TargetServerAttributeNotMatched,  # no host is writable now
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        return sqlstate in _SERVER_LOST_SQLSTATES or sqlstate.startswith("08")
    return False


def is_database_unavailable(exc: BaseException) -> bool:
    """Pool exhaustion, connect failures, lock/statement timeouts, dropped connections, conflicts."""
    if isinstance(
        exc, TimeoutError | OSError | asyncpg.PostgresConnectionError | asyncpg.InternalClientError
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        return sqlstate in _RETRYABLE_SQLSTATES or sqlstate.startswith("08")
    if isinstance(exc, asyncpg.InterfaceError):  # e.g. the connection was closed under a statement
        return isinstance(exc, asyncpg.ConnectionDoesNotExistError) or "closed" in str(exc)
    cause = exc.__cause__
    return isinstance(cause, BaseException) and is_database_unavailable(cause)


def problem(
    status: int, detail: str, *, title: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    phrase = title or HTTPStatus(status).phrase
    body = {"type": "about:blank", "title": phrase, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def betlink_failure(code: str, message: str) -> JSONResponse:
    """The one place BetLink failures are built, so every rejection is logged and counted."""
    BETLINK_AUTH.labels(code).inc()
    event_logger.info("betlink.auth_rejected", error_code=code, error_message=message)
    body = {"status": "FAILED_AUTHENTICATION", "errorCode": code, "errorMessage": message}
    return JSONResponse(body, status_code=BetLinkError.STATUS_BY_CODE[code])


def _is_authenticate(request: Request) -> bool:
    return request.url.path == AUTHENTICATE_PATH and request.method == "POST"


def render(request: Request, error: ServiceError) -> JSONResponse:
    if _is_authenticate(request):
        code = error.code if isinstance(error, BetLinkError) else error.betlink_code
        return betlink_failure(code, error.detail)
    return problem(error.status, error.detail, title=error.title)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return render(request, exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, BodyTooLarge) and _is_authenticate(request):
        return betlink_failure("MISSING_PARAMETER", str(exc.detail))
    headers = dict(exc.headers) if exc.headers else None
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem(exc.status_code, detail, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return render(request, BadRequest(_describe_validation(exc)))


def _describe_validation(exc: RequestValidationError) -> str:
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if is_database_unavailable(exc):
        logger.warning("database unavailable: %s", type(exc).__name__)
        return render(request, DatabaseUnavailable("the database did not answer in time; retry"))
    return await _unexpected(request, exc)


def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A 500 in the route's shape, logged with its traceback (which the redactor then cleans)."""
    logger.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
    return render(request, ServiceError("unexpected error"))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return unexpected(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(asyncpg.PostgresError, _database_error)
    app.add_exception_handler(asyncpg.InterfaceError, _database_error)
    app.add_exception_handler(asyncpg.InternalClientError, _database_error)
    app.add_exception_handler(OSError, _database_error)
    app.add_exception_handler(TimeoutError, _database_error)
    app.add_exception_handler(Exception, _unexpected)

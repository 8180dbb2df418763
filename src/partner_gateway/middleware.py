"""Pure ASGI middleware: request ids, the access log line, HTTP metrics and the body size limit.

The access line carries the caller's key label (`caller`, bound by the key checks in
security.py), never the key.

Pure ASGI rather than BaseHTTPMiddleware: that one runs the app in a separate task, which can
leave a database connection checked out mid-transaction when a client disconnects.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from partner_gateway.errors import AUTHENTICATE_PATH, BodyTooLarge, problem, unexpected
from partner_gateway.logs import get_logger
from partner_gateway.metrics import HTTP_LATENCY, HTTP_REQUESTS

logger = get_logger("partner_gateway.access")

REQUEST_ID_HEADER = b"x-request-id"
# nginx's code for "the client closed the connection before the answer": nothing was sent.
CLIENT_CLOSED_REQUEST = 499
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def _request_id(scope: Scope) -> str:
    """The caller's X-Request-ID when it is sane, else a fresh one (never log what we can't trust)."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            return str(value.decode())
    return uuid.uuid4().hex


# uvicorn accepts any token as a method; counted as itself, each would be a new metric series.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def _method(scope: Scope) -> str:
    method: str = scope["method"]
    return method if method in STANDARD_METHODS else "OTHER"


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        declared = _content_length(scope)
        try:
            if self._declared_too_large(scope, declared):
                # Refused before any route runs, whether or not it reads a body.
                too_large = BodyTooLarge(self.max_body_bytes)
                await problem(413, str(too_large.detail))(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(declared, receive), send_with_id)
        except ClientDisconnect:
            if status is not None:
                raise
            # The client went away mid-body: nobody to answer, and not the service's failure.
            status = CLIENT_CLOSED_REQUEST
        except Exception as exc:
            if status is not None:
                raise
            # Answered here rather than by Starlette's outermost handler, so the 500 carries the
            # request id, and so does its log line.
            await unexpected(Request(scope), exc)(scope, receive, send_with_id)
        finally:
            self._record(scope, status or 500, time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id", "caller")

    def _declared_too_large(self, scope: Scope, declared: int | None) -> bool:
        """A Content-Length over the limit, except on BetLink's Auth endpoint, which checks its
        key first and answers a body over the limit in BetLink's shape when it reads it."""
        if declared is None or declared <= self.max_body_bytes:
            return False
        return not (scope["path"] == AUTHENTICATE_PATH and scope["method"] == "POST")

    def _limited(self, declared: int | None, receive: Receive) -> Receive:
        """A receive that refuses bodies over the limit, declared or streamed."""
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            if declared is not None and declared > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        return receive_limited

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        method, route = _method(scope), _route(scope)
        HTTP_REQUESTS.labels(method, route, str(status)).inc()
        HTTP_LATENCY.labels(method, route, str(status)).observe(elapsed)
        logger.info(
            "http.request", method=method, route=route, status=status, duration_ms=round(elapsed * 1000, 2)
        )

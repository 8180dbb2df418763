"""A stand-in for BidPaw's open-session API, for local runs and tests.

It checks a request the way BidPaw documents it: the parameter object is rebuilt from the raw
query string in arrival order, stringified and HMAC'd with the secret, and the result compared
with the `sign` header in constant time; `clientId` must be ours and `userId` present. A valid
request gets a fake iframe URL with fresh random tokens; anything else gets BidPaw's own
`400 {"data": null, "status": 400, "message": "Not valid request"}`.

The last requests it received (path, raw query, headers) are kept in `app.state.received`, so
tests can assert the exact wire request.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from partner_gateway.bidpaw import signing
from partner_gateway.bidpaw.client import OPEN_SESSION_PATH
from partner_gateway.logs import get_logger

IFRAME_BASE_URL = "https://sandbox.bidpaw.invalid/auctions"
NOT_VALID = {"data": None, "status": 400, "message": "Not valid request"}
KEEP_RECEIVED = 100

logger = get_logger("partner_gateway.bidpaw.sandbox")


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived: the path and query exactly as sent, header names lower-case."""

    method: str
    path: str
    query: bytes
    headers: list[tuple[str, str]]


def query_params(query: bytes) -> list[tuple[str, str]] | None:
    """The parameters in arrival order, as BidPaw rebuilds them; None when not UTF-8."""
    try:
        text = query.decode("ascii")
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None


def is_valid(
    params: list[tuple[str, str]], signature: str | None, *, client_id: str, secret_key: str
) -> bool:
    """BidPaw's checks: a signature over exactly these parameters, our clientId, a userId."""
    values = dict(params)
    if signature is None or "userId" not in values:
        return False
    if not hmac.compare_digest(values.get("clientId", "").encode(), client_id.encode()):
        return False
    return signing.verify(params=params, secret=secret_key, signature=signature)


def _iframe_url(client_id: str) -> str:
    token, session = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    return f"{IFRAME_BASE_URL}?token={token}&session={session}&casinoId={quote(client_id, safe='')}"


def create_sandbox_app(*, client_id: str, secret_key: str) -> Starlette:
    """BidPaw's `GET /api/casino/open-session/`, verifying `sign` with `secret_key`."""
    received: deque[ReceivedRequest] = deque(maxlen=KEEP_RECEIVED)

    async def open_session(request: Request) -> JSONResponse:
        raw_query: bytes = request.scope["query_string"]
        received.append(
            ReceivedRequest(
                method=request.method,
                path=request.scope.get("raw_path", b"").split(b"?")[0].decode("latin-1"),
                query=raw_query,
                headers=[
                    (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
                ],
            )
        )
        params = query_params(raw_query)
        valid = params is not None and is_valid(
            params, request.headers.get("sign"), client_id=client_id, secret_key=secret_key
        )
        logger.info("bidpaw_sandbox.open_session", valid=valid)
        if not valid:
            return JSONResponse(NOT_VALID, status_code=400)
        return JSONResponse({"iframeURL": _iframe_url(client_id)})

    app = Starlette(routes=[Route(OPEN_SESSION_PATH, open_session, methods=["GET"])])
    app.state.received = received
    return app


def run_sandbox(*, host: str, port: int, client_id: str, secret_key: str) -> None:
    """Serve the sandbox until interrupted (`partner-gateway bidpaw-sandbox`)."""
    import uvicorn

    logger.info("bidpaw sandbox listening", url=f"http://{host}:{port}", client_id=client_id)
    uvicorn.run(
        create_sandbox_app(client_id=client_id, secret_key=secret_key),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )

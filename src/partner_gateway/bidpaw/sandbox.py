"""A stand-in for BidPaw's open-session API as BidPaw documents it today (May 2025), for local
runs and tests.

It checks a request the way BidPaw documents it, and answers BidPaw's own 400 bodies
(`{"data": null, "status": 400, "message": ...}`), in this order (BidPaw does not say which
check comes first; this is ours):
1. `clientId`, `userId` or `gameId` missing or empty: `Required parameters missing: ...`,
   naming the missing ones;
2. no `sign` header: `Not valid request. Missing required sign header.`;
3. the parameter object, rebuilt from the raw query string in arrival order, stringified and
   HMAC'd with the secret, differs from `sign` (compared in constant time), or `clientId` is not
   ours, or the query is not UTF-8: `Request signature invalid`.

A valid request gets a fake iframe URL with fresh random `token` and `session` values:
`{IFRAME_BASE_URL}/{locale}/auctions?token=..&session=..&casinoId=..`, where the locale is
`lang` when the sandbox knows it (LOCALES), else `en`; a `country` on the sandbox's restricted
list (`--restricted-countries`) gets `{IFRAME_BASE_URL}/{locale}/region-restriction?...`, still
with a 200, as BidPaw does.

The last requests it received (path, raw query, headers) are kept in `app.state.received`, and
the sessions it opened in `app.state.opened`, so tests can assert the exact wire request.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from partner_gateway.bidpaw import signing
from partner_gateway.bidpaw.client import OPEN_SESSION_PATH
from partner_gateway.bidpaw.sandbox_callbacks import CallbackTarget, callback_routes
from partner_gateway.logs import get_logger

IFRAME_BASE_URL = "https://sandbox.bidpaw.invalid"
REQUIRED = ("clientId", "userId", "gameId")
MISSING_SIGN = "Not valid request. Missing required sign header."
SIGNATURE_INVALID = "Request signature invalid"
LOCALES = frozenset({"en", "es", "fr", "de", "it", "pt", "ru", "tr", "pl", "ja"})
KEEP_RECEIVED = 100

logger = get_logger("partner_gateway.bidpaw.sandbox")


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived: the path and query exactly as sent, header names lower-case."""

    method: str
    path: str
    query: bytes
    headers: list[tuple[str, str]]


def bidpaw_error(message: str) -> dict[str, object]:
    """BidPaw's 400 body."""
    return {"data": None, "status": 400, "message": message}


def missing_parameters(names: list[str]) -> str:
    return f"Required parameters missing: {', '.join(names)}"


@dataclass(frozen=True)
class OpenedSession:
    """A lobby the sandbox opened: what BidPaw would keep for its wallet callbacks."""

    user_id: str
    game_id: str
    currency: str | None
    session: str
    iframe_url: str


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
    """True when `rejection` finds nothing wrong."""
    return rejection(params, signature, client_id=client_id, secret_key=secret_key) is None


def rejection(
    params: list[tuple[str, str]] | None, signature: str | None, *, client_id: str, secret_key: str
) -> str | None:
    """BidPaw's 400 message for this request, in the sandbox's order of checks; None when valid."""
    values = dict(params or [])
    if params is not None:
        missing = [name for name in REQUIRED if not values.get(name)]
        if missing:
            return missing_parameters(missing)
    if signature is None:
        return MISSING_SIGN
    if params is None or not hmac.compare_digest(values["clientId"].encode(), client_id.encode()):
        return SIGNATURE_INVALID
    if not signing.verify(params=params, secret=secret_key, signature=signature):
        return SIGNATURE_INVALID
    return None


def _iframe_url(client_id: str, *, lang: str | None, restricted: bool) -> tuple[str, str]:
    """A fresh lobby URL and its session value."""
    token, session = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    locale = lang.lower() if lang and lang.lower() in LOCALES else "en"
    page = "region-restriction" if restricted else "auctions"
    query = f"token={token}&session={session}&casinoId={quote(client_id, safe='')}"
    return f"{IFRAME_BASE_URL}/{locale}/{page}?{query}", session


def create_sandbox_app(
    *,
    client_id: str,
    secret_key: str,
    restricted_countries: Iterable[str] = (),
    callbacks: CallbackTarget | None = None,
) -> Starlette:
    """BidPaw's `GET /api/casino/open-session/`, verifying `sign` with `secret_key`; a `country` in
    `restricted_countries` (any case) gets the region-restriction page."""
    received: deque[ReceivedRequest] = deque(maxlen=KEEP_RECEIVED)
    opened: deque[OpenedSession] = deque(maxlen=KEEP_RECEIVED)
    restricted = frozenset(code.upper() for code in restricted_countries)

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
        refused = rejection(params, request.headers.get("sign"), client_id=client_id, secret_key=secret_key)
        logger.info("bidpaw_sandbox.open_session", valid=refused is None, message=refused)
        if refused is not None or params is None:
            return JSONResponse(bidpaw_error(refused or SIGNATURE_INVALID), status_code=400)
        values = dict(params)
        country = values.get("country", "").upper()
        url, session = _iframe_url(client_id, lang=values.get("lang"), restricted=country in restricted)
        currency = values.get("currency")
        opened.append(OpenedSession(values["userId"], values["gameId"], currency, session, url))
        return JSONResponse({"iframeURL": url})

    routes = [Route(OPEN_SESSION_PATH, open_session, methods=["GET"])]
    if callbacks is not None:  # BidPaw's wallet side (sandbox_callbacks.py)
        routes += callback_routes(opened, client_id=client_id, target=callbacks)
    app = Starlette(routes=routes)
    app.state.received = received
    app.state.opened = opened
    return app


def run_sandbox(
    *,
    host: str,
    port: int,
    client_id: str,
    secret_key: str,
    restricted_countries: Iterable[str] = (),
    callbacks: CallbackTarget | None = None,
) -> None:
    """Serve the sandbox until interrupted (`partner-gateway bidpaw-sandbox`)."""
    import uvicorn

    restricted = sorted(code.upper() for code in restricted_countries)
    logger.info(
        "bidpaw sandbox listening",
        url=f"http://{host}:{port}",
        client_id=client_id,
        restricted_countries=restricted,
    )
    uvicorn.run(
        create_sandbox_app(
            client_id=client_id, secret_key=secret_key, restricted_countries=restricted, callbacks=callbacks
        ),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )

"""The BidPaw sandbox playing BidPaw's wallet side: signed charge and credit callbacks.

`POST /_sandbox/wallet-callback` with `{"method": "charge"|"credit", "userId": "u1", "amount": 250}`
(optional `currency`, `transactionId`, `sessionId`) sends, as BidPaw would, a callback for the
newest session the sandbox opened for that player: `POST {callback_url}` with BidPaw's eight
parameters in a JSON body, signed with the callback secret (`sign`). It answers what it sent and
what came back: `{"sent": {...}, "status": 200, "answer": {"errorCode": 0, ...}}`. Sending the
same `transactionId` again is a replay.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from partner_gateway.bidpaw.signing import Pairs, callback_signatures

CALLBACK_PATH = "/_sandbox/wallet-callback"


class Opened(Protocol):
    @property
    def user_id(self) -> str: ...

    @property
    def game_id(self) -> str: ...

    @property
    def currency(self) -> str | None: ...

    @property
    def session(self) -> str: ...


@dataclass(frozen=True)
class CallbackTarget:
    """Where BidPaw's callbacks go (our CALLBACK_URL) and the key that signs them: `secret`, else
    local mode's BIDPAW_CALLBACK_SECRET in `local_secrets` (read at each callback, so a `serve
    --local` started later is followed), else none (unsigned)."""

    url: str
    secret: str | None = None
    local_secrets: Path | None = None

    def key(self) -> str | None:
        if self.secret is not None or self.local_secrets is None:
            return self.secret
        try:
            value = json.loads(self.local_secrets.read_text()).get("BIDPAW_CALLBACK_SECRET")
        except (OSError, ValueError):
            return None
        return value.split(",")[0].strip() if isinstance(value, str) and value else None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def callback_routes(opened: Iterable[Opened], *, client_id: str, target: CallbackTarget) -> list[Route]:
    async def send(request: Request) -> JSONResponse:
        try:
            asked = json.loads(await request.body())
        except ValueError:
            return _error(400, "a JSON object: method, userId, amount (currency, transactionId optional)")
        if not isinstance(asked, dict) or asked.get("method") not in ("charge", "credit"):
            return _error(400, "method must be charge or credit")
        user_id = asked.get("userId")
        session = next((s for s in reversed(list(opened)) if s.user_id == user_id), None)
        if session is None:
            return _error(404, f"no session opened for userId {user_id!r}: open one first")
        params: dict[str, Any] = {
            "method": asked["method"],
            "userId": user_id,
            "clientId": client_id,
            "gameId": session.game_id,
            "sessionId": asked.get("sessionId", session.session),
            "amount": asked.get("amount", 100),
            "currency": asked.get("currency") or session.currency or "EUR",
            "transactionId": asked.get("transactionId") or "bp-" + secrets.token_hex(8),
        }
        return JSONResponse(await _deliver(params, target))

    return [Route(CALLBACK_PATH, send, methods=["POST"])]


async def _deliver(params: dict[str, Any], target: CallbackTarget) -> dict[str, Any]:
    body = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    key = target.key()
    if key is not None:
        headers["sign"] = callback_signatures(params=Pairs(params.items()), secrets=[key])[0]
    async with httpx.AsyncClient(timeout=15) as client:
        try:
            response = await client.post(target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return {"sent": params, "error": f"{type(exc).__name__}: the callback URL did not answer"}
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text[:500]
    return {"sent": params, "status": response.status_code, "answer": answer}

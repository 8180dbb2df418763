"""BidPaw's seamless-wallet callback, `POST /bidpaw/wallet` (and the same over GET).

Checks, in the contract's order; the first that fails decides the errorCode:
1. `sign` repeated (6), then the signature (6): over the parameter object as BidPaw's sample
   stringifies it, keyed with one of BIDPAW_CALLBACK_SECRET (or not required when
   BIDPAW_CALLBACK_SIGNATURE=off);
2. the parameters (4): each present once and well-formed, clientId and gameId ours, amount in
   range, currency one of BidPaw's;
3. then, in the database (wallet/transactions.py): a replay (its recorded answer) or other
   parameters under a used transactionId (5); the BidPaw session (3; a currency other than the
   session's is 4); the block (2, charges only); and the money, exactly once.

Every answer is `200 {"errorCode": n, "errorDescription": ".."}`; nothing here raises to a 500.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from partner_gateway.bidpaw.endpoints import CURRENCIES
from partner_gateway.bidpaw.signing import JsonValue, Pairs, callback_signatures
from partner_gateway.config import Settings
from partner_gateway.db import Database
from partner_gateway.errors import BadRequest, BodyTooLarge
from partner_gateway.logs import get_logger
from partner_gateway.metrics import BIDPAW_CALLBACK_LATENCY, BIDPAW_CALLBACKS
from partner_gateway.security import check_user_id
from partner_gateway.wallet.client import WalletClient
from partner_gateway.wallet.transactions import Answered, Callback, Clock, Code, process

logger = get_logger("partner_gateway.bidpaw.wallet")

router = APIRouter(prefix="/bidpaw", tags=["bidpaw"])

PARAMETERS = ("method", "userId", "clientId", "gameId", "sessionId", "amount", "currency", "transactionId")
MAX_SESSION_ID_CHARS = 256
MAX_TRANSACTION_ID_CHARS = 128
MAX_AMOUNT_DIGITS = 18


class WalletCallbackResponse(BaseModel):
    """BidPaw's answer shape: 0 when done, else one of the codes in docs/api.md."""

    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {"errorCode": 0, "errorDescription": ""},
                {"errorCode": 1, "errorDescription": "Not Enough Balance"},
            ]
        },
    )

    error_code: int = Field(alias="errorCode", title="Error code", ge=0, le=9)
    error_description: str = Field(alias="errorDescription", title="Error description")


class Refused(Exception):
    """The callback is refused before anything is recorded."""

    def __init__(self, code: Code, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


@dataclass(frozen=True)
class Received:
    """The callback's parameter object as BidPaw built it: query first, then the JSON body."""

    pairs: Pairs
    well_formed: bool  # False: a body or query that could not be read as parameters


async def _received(request: Request) -> Received:
    pairs = Pairs()
    try:
        query = request.scope["query_string"].decode("ascii")
        pairs.extend(parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="strict"))
    except UnicodeDecodeError:
        return Received(pairs, well_formed=False)
    if request.method != "POST":
        return Received(pairs, well_formed=True)
    body = await request.body()
    if not body.strip():
        return Received(pairs, well_formed=True)
    try:
        parsed = json.loads(body, object_pairs_hook=Pairs)
    except (ValueError, RecursionError):
        return Received(pairs, well_formed=False)
    if not isinstance(parsed, Pairs):
        return Received(pairs, well_formed=False)
    pairs.extend(parsed)
    return Received(pairs, well_formed=True)


def _check_signature(request: Request, received: Received, settings: Settings) -> None:
    signs = [value for name, value in request.headers.raw if name == b"sign"]
    if len(signs) > 1:
        raise Refused(Code.INVALID_SIGNATURE, "sign sent more than once")
    if settings.bidpaw_callback_signature == "off":
        return
    secrets = [secret.get_secret_value() for secret in settings.bidpaw_callback_secret]
    if not secrets:
        raise Refused(Code.INVALID_SIGNATURE, "callbacks are not configured (BIDPAW_CALLBACK_SECRET)")
    if not signs:
        raise Refused(Code.INVALID_SIGNATURE, "sign missing")
    if not received.well_formed:
        raise Refused(Code.INVALID_SIGNATURE, "no parameter object to check the signature against")
    try:
        expected = callback_signatures(params=received.pairs, secrets=secrets)
    except RecursionError:
        raise Refused(Code.INVALID_SIGNATURE, "parameters nested too deeply") from None
    presented = signs[0]
    matched = False
    for digest in expected:  # every secret compared, in constant time
        matched |= _compare(digest.encode(), presented)
    if not matched:
        raise Refused(Code.INVALID_SIGNATURE, "sign does not verify")


def _compare(expected: bytes, presented: bytes) -> bool:
    import hmac

    return hmac.compare_digest(expected, presented)


def _printable(value: str, *, longest: int) -> bool:
    return 1 <= len(value) <= longest and value.isprintable()


def _string(params: dict[str, JsonValue], name: str) -> str:
    value = params[name]
    if not isinstance(value, str):
        raise Refused(Code.INVALID_REQUEST, f"{name} must be a string")
    return value


def _amount(value: JsonValue, *, get: bool, largest: int) -> int:
    if get:
        if not isinstance(value, str) or not (value.isascii() and value.isdigit()):
            raise Refused(Code.INVALID_REQUEST, "amount must be decimal digits")
        if len(value) > MAX_AMOUNT_DIGITS:
            raise Refused(Code.INVALID_REQUEST, "amount out of range")
        amount = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = value
    else:
        raise Refused(Code.INVALID_REQUEST, "amount must be a JSON integer")
    if not 1 <= amount <= largest:
        raise Refused(Code.INVALID_REQUEST, f"amount must be 1 to {largest} cents")
    return amount


def _check_parameters(received: Received, settings: Settings, *, get: bool) -> Callback:
    if not received.well_formed:
        raise Refused(Code.INVALID_REQUEST, "the body must be a JSON object and the query UTF-8")
    names = [name for name, _ in received.pairs]
    for name in PARAMETERS:
        if names.count(name) != 1:
            raise Refused(Code.INVALID_REQUEST, f"{name} must be sent exactly once")
    params = dict(received.pairs)
    method = _string(params, "method")
    if method not in ("charge", "credit"):
        raise Refused(Code.INVALID_REQUEST, "method must be charge or credit")
    user_id = _string(params, "userId")
    try:
        check_user_id(user_id)  # the X-User-Id rules, as the contract says
    except BadRequest:
        raise Refused(Code.INVALID_REQUEST, "userId malformed") from None
    client_id, game_id = _string(params, "clientId"), _string(params, "gameId")
    if client_id != settings.bidpaw_client_id or game_id != settings.bidpaw_game_id:
        raise Refused(Code.INVALID_REQUEST, "clientId or gameId is not ours")
    session_id = _string(params, "sessionId")
    if not _printable(session_id, longest=MAX_SESSION_ID_CHARS):
        raise Refused(Code.INVALID_REQUEST, "sessionId malformed")
    amount = _amount(params["amount"], get=get, largest=settings.bidpaw_wallet_max_amount)
    currency = _string(params, "currency")
    if currency not in CURRENCIES:
        raise Refused(Code.INVALID_REQUEST, "currency is not one of BidPaw's")
    transaction_id = _string(params, "transactionId")
    if not _printable(transaction_id, longest=MAX_TRANSACTION_ID_CHARS):
        raise Refused(Code.INVALID_REQUEST, "transactionId malformed")
    return Callback(
        method=method,
        user_id=user_id,
        client_id=client_id,
        game_id=game_id,
        session_id=session_id,
        amount=amount,
        currency=currency,
        transaction_id=transaction_id,
    )


def _answer(code: Code) -> JSONResponse:
    return JSONResponse({"errorCode": int(code), "errorDescription": code.description})


async def _handle(request: Request, clock: Clock) -> tuple[Callback | None, Answered, str]:
    settings: Settings = request.app.state.settings
    received = await _received(request)
    _check_signature(request, received, settings)
    callback = _check_parameters(received, settings, get=request.method != "POST")
    wallet: WalletClient | None = request.app.state.wallet  # none: replays only, new ones 8
    database: Database = request.app.state.database
    return callback, await process(database, wallet, callback, clock=clock), ""


_SIGN = {
    "name": "sign",
    "in": "header",
    "required": False,
    "description": "Lower-case hex HMAC-SHA256 of the parameter object as BidPaw's sample stringifies "
    "it, keyed with BIDPAW_CALLBACK_SECRET. Required unless BIDPAW_CALLBACK_SIGNATURE=off; sent once.",
    "schema": {"type": "string", "title": "Signature"},
}
_FIELDS: dict[str, dict[str, Any]] = {
    "method": {"type": "string", "enum": ["charge", "credit"], "title": "Method"},
    "userId": {"type": "string", "minLength": 1, "maxLength": 128, "title": "Player id"},
    "clientId": {"type": "string", "title": "Casino id (BIDPAW_CLIENT_ID)"},
    "gameId": {"type": "string", "title": "Game id (BIDPAW_GAME_ID)"},
    "sessionId": {"type": "string", "minLength": 1, "maxLength": 256, "title": "BidPaw session id"},
    "amount": {"type": "integer", "minimum": 1, "title": "Amount in cents"},
    "currency": {"type": "string", "title": "Currency code"},
    "transactionId": {"type": "string", "minLength": 1, "maxLength": 128, "title": "BidPaw transaction id"},
}
_EXAMPLE = {
    "method": "charge",
    "userId": "u1",
    "clientId": "casino-1",
    "gameId": "game-1",
    "sessionId": "Zx81mQ",
    "amount": 250,
    "currency": "EUR",
    "transactionId": "bp-7f3a9c",
}
_POST_EXTRA = {
    "parameters": [_SIGN],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "title": "Wallet callback",
                    "required": list(PARAMETERS),
                    "properties": _FIELDS,
                },
                "example": _EXAMPLE,
            }
        },
    },
}
_GET_EXTRA = {
    "parameters": [
        _SIGN,
        *(
            {"name": name, "in": "query", "required": True, "schema": {**field, "type": "string"}}
            for name, field in _FIELDS.items()
        ),
    ]
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    405: {"description": "a method other than GET or POST"},
    413: {"description": "a body over MAX_BODY_BYTES"},
}


@router.get(
    "/wallet",
    response_model=WalletCallbackResponse,
    operation_id="bidpaw_wallet_callback_get",
    openapi_extra=_GET_EXTRA,
    responses=_RESPONSES,
)
@router.post(
    "/wallet",
    response_model=WalletCallbackResponse,
    operation_id="bidpaw_wallet_callback_post",
    openapi_extra=_POST_EXTRA,
    responses=_RESPONSES,
)
async def wallet_callback(request: Request) -> JSONResponse:
    """BidPaw's seamless-wallet callback (`CALLBACK_URL`): charge or credit a player, exactly once.

    Parameters (a JSON object body, or the query string of a GET): `method` (charge, credit),
    `userId`, `clientId`, `gameId`, `sessionId`, `amount` (cents), `currency`, `transactionId`;
    header `sign`. Always `200` with `errorCode` (0 done; 1 Not Enough Balance; 2 Player blocked;
    3 Unknown session; 4 Invalid request; 5 Duplicate transaction; 6 Invalid signature; 7 Refused
    by the wallet; 8 Temporary failure, nothing charged; 9 In progress, retry). A replay of a
    transactionId gets the same answer, byte for byte. See docs/api.md.
    """
    settings: Settings = request.app.state.settings
    clock = Clock(settings.bidpaw_wallet_deadline_seconds)
    callback: Callback | None = None
    why = ""
    try:
        callback, answered, why = await _handle(request, clock)
    except Refused as refused:
        answered, why = Answered(refused.code), refused.why
    except BodyTooLarge:
        raise  # 413 problem+json, as on every route
    except Exception as exc:  # a bug must not become a 500; 9 is never final, so it is safe
        logger.error("bidpaw.wallet_callback_failed", error=type(exc).__name__, exc_info=exc)
        answered, why = Answered(Code.IN_PROGRESS), "unexpected error"
    _record(callback, answered, why, time.monotonic() - clock.started)
    return _answer(answered.code)


def _record(callback: Callback | None, answered: Answered, why: str, elapsed: float) -> None:
    method = callback.method if callback is not None else "invalid"
    BIDPAW_CALLBACKS.labels(method, str(int(answered.code))).inc()
    BIDPAW_CALLBACK_LATENCY.labels(method).observe(elapsed)
    fields: dict[str, Any] = {
        "method": method,
        "error_code": int(answered.code),
        "wallet": answered.wallet,
        "duration_ms": round(elapsed * 1000, 2),
    }
    if callback is not None:
        fields |= {
            "transaction_id": callback.transaction_id,
            "amount": callback.amount,
            "currency": callback.currency,
        }
    if why:
        fields["reason"] = why
    logger.info("bidpaw.wallet_callback", **fields)

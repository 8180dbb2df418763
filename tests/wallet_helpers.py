"""Builders for BidPaw's wallet callbacks: signed parameter objects and session records."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.bidpaw.signing import Pairs, callback_signatures

CLIENT_ID = "casino-42"
GAME_ID = "game-7"
CALLBACK_SECRET = "cb-secret-0001"
CALLBACK_SECRET_ROTATED = "cb-secret-0002"
WALLET_SECRET = "wallet-secret-0001"
SESSION = "ses-1"


def wallet_settings(wallet_url: str, **overrides: Any) -> dict[str, Any]:
    """Settings overrides for an app whose BidPaw wallet callbacks are configured."""
    values: dict[str, Any] = {
        "bidpaw_client_id": CLIENT_ID,
        "bidpaw_game_id": GAME_ID,
        "bidpaw_callback_secret": f"{CALLBACK_SECRET_ROTATED},{CALLBACK_SECRET}",
        "wallet_url": wallet_url,
        "wallet_secret": WALLET_SECRET,
    }
    values.update(overrides)
    return values


def wallet_environment(wallet_url: str, **overrides: str) -> dict[str, str]:
    """The same as environment variables, for a real `serve` process."""
    values = {
        "BIDPAW_CLIENT_ID": CLIENT_ID,
        "BIDPAW_GAME_ID": GAME_ID,
        "BIDPAW_CALLBACK_SECRET": f"{CALLBACK_SECRET_ROTATED},{CALLBACK_SECRET}",
        "WALLET_URL": wallet_url,
        "WALLET_SECRET": WALLET_SECRET,
    }
    values.update(overrides)
    return values


def params(method: str = "charge", **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "method": method,
        "userId": "player-1",
        "clientId": CLIENT_ID,
        "gameId": GAME_ID,
        "sessionId": SESSION,
        "amount": 250,
        "currency": "EUR",
        "transactionId": "tx-" + uuid.uuid4().hex,
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def sign_params(values: dict[str, Any] | list[tuple[str, Any]], secret: str = CALLBACK_SECRET) -> str:
    pairs = Pairs(values.items() if isinstance(values, dict) else values)
    return callback_signatures(params=pairs, secrets=[secret])[0]


def signed_post(values: dict[str, Any], secret: str = CALLBACK_SECRET) -> dict[str, Any]:
    """httpx keyword arguments for a signed POST of `values`."""
    body = json.dumps(values).encode()
    return {
        "content": body,
        "headers": {"sign": sign_params(values, secret), "Content-Type": "application/json"},
    }


def signed_get(values: dict[str, Any], secret: str = CALLBACK_SECRET) -> dict[str, Any]:
    strings = {key: str(value) for key, value in values.items()}
    return {"params": strings, "headers": {"sign": sign_params(strings, secret)}}


def answer(code: int) -> dict[str, Any]:
    descriptions = {
        0: "",
        1: "Not Enough Balance",
        2: "Player blocked",
        3: "Unknown session",
        4: "Invalid request",
        5: "Duplicate transaction",
        6: "Invalid signature",
        7: "Refused by the wallet",
        8: "Temporary failure, nothing charged",
        9: "In progress, retry",
    }
    return {"errorCode": code, "errorDescription": descriptions[code]}


async def open_bidpaw_session(
    engine: AsyncEngine, *, user_id: str = "player-1", session: str = SESSION, currency: str | None = "EUR"
) -> None:
    """A BidPaw session record, as open-session writes it."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO bidpaw_sessions (user_id, game_id, currency, session, created_at, last_used_at) "
                "VALUES (:user_id, :game_id, :currency, :session, now(), now())"
            ),
            {"user_id": user_id, "game_id": GAME_ID, "currency": currency, "session": session},
        )

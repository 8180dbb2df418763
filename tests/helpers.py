"""Small builders shared by the tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import BETLINK_KEY, GATEWAY_HEADERS, OPERATOR_ID


async def launch(client: httpx.AsyncClient, user_id: str = "player-1") -> dict[str, str]:
    """A fresh launch token for `user_id`: the body /betlink/session answered."""
    response = await client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": user_id})
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


def auth_body(session: dict[str, str], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requestId": str(uuid.uuid4()),
        "userId": session["userId"],
        "operatorId": OPERATOR_ID,
        "launchToken": session["launchToken"],
        "authRequestedTimestamp": "1640995200000",
    }
    body.update(overrides)
    return body


def auth_headers(key: str | None = None, **extra: str) -> dict[str, str]:
    return {"X-API-Key": BETLINK_KEY, "X-Idempotency-Key": key or str(uuid.uuid4()), **extra}


async def authenticate(
    client: httpx.AsyncClient, session: dict[str, str], *, key: str | None = None, **overrides: Any
) -> httpx.Response:
    return await client.post(
        "/betlink/authenticate", headers=auth_headers(key), json=auth_body(session, **overrides)
    )


def failure(code: str, message: str) -> dict[str, str]:
    return {"status": "FAILED_AUTHENTICATION", "errorCode": code, "errorMessage": message}


async def hold_key_claim(conn: AsyncConnection, key: uuid.UUID) -> None:
    """Act as a first request still running: claim `key` in `conn`'s open transaction."""
    await conn.execute(
        text(
            "INSERT INTO idempotency_keys (key, fingerprint, created_at, expires_at) "
            "VALUES (:k, '\\x00', now(), now())"
        ),
        {"k": key},
    )

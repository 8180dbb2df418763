"""BetLink behaviour: issuing launch tokens and exchanging them for session tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from partner_gateway import store
from partner_gateway.config import Settings
from partner_gateway.errors import PlayerBlocked
from partner_gateway.security import LAUNCH_TOKEN_BYTES, UserIdCipher, digest, new_token


@dataclass(frozen=True)
class LaunchToken:
    token: str
    betlink_user_id: str
    expires_at: datetime


async def issue_launch_token(
    conn: AsyncConnection, *, user_id: str, settings: Settings, cipher: UserIdCipher, now: datetime
) -> LaunchToken:
    """Create a new user session (one per call, as BetLink asks) holding a fresh launch token."""
    token = new_token(LAUNCH_TOKEN_BYTES)
    expires_at = now + timedelta(seconds=settings.betlink_launch_token_ttl_seconds)
    created = await store.create_session(
        conn, user_id=user_id, token_hash=digest(token), expires_at=expires_at, now=now
    )
    if not created:
        raise PlayerBlocked("the player is blocked")
    return LaunchToken(token=token, betlink_user_id=cipher.encrypt(user_id), expires_at=expires_at)

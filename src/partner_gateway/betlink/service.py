"""BetLink behaviour: issuing launch tokens and exchanging them for session tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from partner_gateway import store
from partner_gateway.betlink.schemas import AuthenticateRequest, AuthenticateResponse
from partner_gateway.config import Settings
from partner_gateway.db import Connection, utc_now
from partner_gateway.errors import BetLinkError, PlayerBlocked
from partner_gateway.security import (
    LAUNCH_TOKEN_BYTES,
    SESSION_TOKEN_BYTES,
    Sealer,
    UserIdCipher,
    digest,
    new_token,
)


@dataclass(frozen=True)
class LaunchToken:
    token: str
    betlink_user_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Authenticated:
    body: bytes  # the exact 200 body: replays return these bytes again
    replayed: bool


async def issue_launch_token(
    conn: Connection, *, user_id: str, settings: Settings, cipher: UserIdCipher, now: datetime
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


def epoch_ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def fingerprint(request: AuthenticateRequest) -> bytes:
    """What makes two requests under one idempotency key "the same" (requestId and time excluded)."""
    material = json.dumps([request.user_id, request.operator_id, request.launch_token])
    return hashlib.sha256(material.encode()).digest()


async def authenticate(
    conn: Connection,
    *,
    request: AuthenticateRequest,
    idempotency_key: uuid.UUID,
    settings: Settings,
    cipher: UserIdCipher,
    sealer: Sealer,
    now: datetime,
    clock: Callable[[], datetime] = utc_now,
) -> Authenticated:
    """Exchange a launch token for a session token, exactly once per idempotency key.

    Follows the contract's check table from row 3 on (rows 1 and 2, key and shape, are the
    endpoint's). Every failure raises, which rolls back the key's claim with everything else:
    only a 200 marks a key as processed. `now` is when the request arrived; the launch token's
    expiry is judged no earlier than `clock()` once its session row is locked, so a request that
    queued behind a lock cannot exchange a token that expired while it waited.
    """
    if request.operator_id != settings.betlink_operator_id:
        raise BetLinkError("AUTHENTICATION_FAILED", "operatorId is not this operator's")
    key_expiry = now + timedelta(seconds=settings.idempotency_ttl_seconds)
    fp = fingerprint(request)
    claim = await store.claim_key(
        conn,
        key=idempotency_key,
        fingerprint=fp,
        token_hash=digest(request.launch_token),
        now=now,
        expires_at=key_expiry,
    )
    if isinstance(claim, store.ProcessedKey):
        return _replay(claim, fingerprint=fp, key=idempotency_key, sealer=sealer)
    now = max(now, clock())
    session = _check_session(await _fresh_block(conn, claim.session), request=request, cipher=cipher, now=now)
    return await _exchange(
        conn, session, request=request, key=idempotency_key, settings=settings, sealer=sealer, now=now
    )


async def _fresh_block(conn: Connection, session: store.LockedSession | None) -> store.LockedSession | None:
    """Race: a block that revoked this session while we waited for its row lock. The lock shows
    the revocation, but `blocked` came from the statement's older snapshot; a new statement sees
    the block, so the answer is USER_BLOCKED rather than INVALID_SESSION."""
    if session is None or session.revoked_at is None or session.blocked:
        return session
    return replace(session, blocked=await store.is_blocked(conn, user_id=session.user_id))


def _replay(
    processed: store.ProcessedKey, *, fingerprint: bytes, key: uuid.UUID, sealer: Sealer
) -> Authenticated:
    if not hmac.compare_digest(processed.fingerprint, fingerprint):
        raise BetLinkError("AUTHENTICATION_FAILED", "this X-Idempotency-Key was used for another request")
    return Authenticated(body=sealer.open(processed.response, context=key.bytes), replayed=True)


def _check_session(
    session: store.LockedSession | None, *, request: AuthenticateRequest, cipher: UserIdCipher, now: datetime
) -> store.LockedSession:
    if session is None:
        raise BetLinkError("INVALID_SESSION", "unknown launch token")
    real_user_id = cipher.decrypt(request.user_id)
    if real_user_id is None or not hmac.compare_digest(real_user_id.encode(), session.user_id.encode()):
        raise BetLinkError("INVALID_USER", "userId does not match the session's player")
    if session.blocked:
        raise BetLinkError("USER_BLOCKED", "the player is blocked")
    if (spent := _spent(session, now=now)) is not None:
        raise BetLinkError("INVALID_SESSION", spent)
    return session


def _spent(session: store.LockedSession, *, now: datetime) -> str | None:
    """Why a launch token can no longer be exchanged, in BetLink's errorMessage (the code stays
    INVALID_SESSION): the most telling case first."""
    if session.revoked_at is not None:
        return "the launch token was revoked"
    if session.exchanged:
        return "the launch token was already exchanged for a session token"
    if session.launch_expires_at <= now:
        return "the launch token has expired"
    return None


async def _exchange(
    conn: Connection,
    session: store.LockedSession,
    *,
    request: AuthenticateRequest,
    key: uuid.UUID,
    settings: Settings,
    sealer: Sealer,
    now: datetime,
) -> Authenticated:
    token = new_token(SESSION_TOKEN_BYTES)
    expires_at = now + timedelta(seconds=settings.betlink_session_ttl_seconds)
    assert settings.betlink_redirect_url is not None
    response = AuthenticateResponse(
        request_id=request.request_id,
        user_id=request.user_id,
        operator_id=request.operator_id,
        operator_session_token=token,
        timestamp=epoch_ms(now),
        session_expiry=epoch_ms(expires_at),
        redirect_url=settings.betlink_redirect_url,
    )
    body = response.model_dump_json(by_alias=True).encode()
    await store.record_exchange(
        conn,
        session_id=session.id,
        token_hash=digest(token),
        expires_at=expires_at,
        key=key,
        response=sealer.seal(body, context=key.bytes),
    )
    return Authenticated(body=body, replayed=False)


MAX_TOKEN_CHARS = 512


async def introspect(conn: Connection, *, token: str, now: datetime) -> store.LiveSession | None:
    """The live session behind an operatorSessionToken: unknown, expired, revoked or blocked is None."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return await store.live_session(conn, token_hash=digest(token), now=now)

"""The tables. Tokens are stored only as SHA-256 digests; replay copies only encrypted."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Identity, Index, LargeBinary, Text, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from partner_gateway.db import Base


class Player(Base):
    """A player the gateway has seen or blocked; its row lock orders sessions against blocks."""

    __tablename__ = "players"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    blocked: Mapped[bool] = mapped_column(Boolean, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserSession(Base):
    """BetLink's "user session": a launch token, later exchanged once for a session token."""

    __tablename__ = "user_sessions"
    __table_args__ = (
        Index("ix_user_sessions_user_id", "user_id"),
        Index("ix_user_sessions_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    launch_token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    launch_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    session_token_hash: Mapped[bytes | None] = mapped_column(LargeBinary, unique=True)
    session_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IdempotencyKey(Base):
    """A processed `X-Idempotency-Key`: only committed with the 200 body it answered."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    key: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PlayerBlockEvent(Base):
    """Audit trail of blocks and unblocks: who (the gateway key's label), when, which way."""

    __tablename__ = "player_block_events"
    __table_args__ = (Index("ix_player_block_events_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    blocked: Mapped[bool] = mapped_column(Boolean)
    actor: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BidPawSession(Base):
    """A BidPaw lobby we opened for a player: what BidPaw's wallet callbacks are checked against.

    `session` is the iframe URL's `session` value (BidPaw's `sessionId` in its callbacks); the
    URL's `token`, which opens the player's lobby, is never stored. `last_used_at` moves with
    each callback that names the session; purge keeps a record 90 days past it.
    """

    __tablename__ = "bidpaw_sessions"
    __table_args__ = (
        Index("ix_bidpaw_sessions_user_id_session", "user_id", "session"),
        Index("ix_bidpaw_sessions_last_used_at", "last_used_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    game_id: Mapped[str] = mapped_column(Text)
    currency: Mapped[str | None] = mapped_column(Text)
    session: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

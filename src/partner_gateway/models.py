"""The tables. Tokens are stored only as SHA-256 digests; replay copies only encrypted."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
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


class WalletTransaction(Base):
    """One BidPaw charge or credit and its way through the casino's wallet (wallet/transactions.py).

    `state`: recorded (the wallet is being asked; no answer yet), reversing (a charge answered 8,
    its debit to be undone), delivering (a credit answered 0, to be delivered), final, or stuck (the
    wallet refused what BidPaw was told is done: for people). `answer` is the errorCode BidPaw got,
    set once; `outcome` what the wallet did. `fingerprint` is the digest of the parameters, so a
    replay with other parameters is told apart.
    """

    __tablename__ = "wallet_transactions"
    __table_args__ = (
        UniqueConstraint("partner", "transaction_id", name="uq_wallet_transactions_partner"),
        CheckConstraint("method IN ('charge', 'credit')", name="method"),
        CheckConstraint("state IN ('recorded', 'reversing', 'delivering', 'final', 'stuck')", name="state"),
        CheckConstraint("answer IN (0, 1, 7, 8)", name="answer"),
        CheckConstraint(
            "outcome IN ('applied', 'insufficient_funds', 'refused', 'reversed')", name="outcome"
        ),
        CheckConstraint("(state = 'recorded') = (answer IS NULL)", name="answered"),
        CheckConstraint("amount > 0", name="amount"),
        Index(
            "ix_wallet_transactions_open",
            "next_attempt_at",
            postgresql_where=text("state IN ('recorded', 'reversing', 'delivering')"),
        ),
        Index("ix_wallet_transactions_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    partner: Mapped[str] = mapped_column(Text)
    transaction_id: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(Text)
    game_id: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(Text)
    answer: Mapped[int | None] = mapped_column(SmallInteger)
    outcome: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

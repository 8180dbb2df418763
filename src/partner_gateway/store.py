"""All SQL. The races of the contract are decided here, each named where it is decided.

Every function runs inside the caller's transaction (READ COMMITTED, pinned by `db.ConnectionMode`)
and never commits. Statements are `db.Statement`s, written with `:name` binds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from partner_gateway.db import Connection, Statement

# Race: a block committing while a launch token is issued. The upsert takes the player's row
# lock (DO UPDATE locks even when nothing changes) and RETURNING reads the newest committed
# `blocked`, so the session is either refused here or already visible to the block's revocation.
_CREATE_SESSION = Statement(
    "create_session",
    """
WITH player AS (
    INSERT INTO players (user_id, blocked, updated_at) VALUES (:user_id, false, :now)
    ON CONFLICT (user_id) DO UPDATE SET blocked = players.blocked
    RETURNING blocked
)
INSERT INTO user_sessions (user_id, launch_token_hash, launch_expires_at, created_at)
SELECT :user_id, :token_hash, :expires_at, :now FROM player WHERE NOT player.blocked
RETURNING id
""",
)


async def create_session(
    conn: Connection, *, user_id: str, token_hash: bytes, expires_at: datetime, now: datetime
) -> bool:
    """Insert a user session with its launch token; False when the player is blocked."""
    params = {"user_id": user_id, "token_hash": token_hash, "expires_at": expires_at, "now": now}
    return await conn.fetchrow(_CREATE_SESSION, **params) is not None


# Three races are decided by this one statement (one round trip on the hot path):
# - Simultaneous requests with one idempotency key: the primary key decides. The first INSERT
#   wins; the others wait on its transaction (bounded by lock_timeout), then insert nothing if
#   it committed, or take the claim over if it rolled back (failures are not stored).
# - A key past its life (expires_at passed, not purged yet) is taken over: DO UPDATE gives the
#   row to this request as if new, so it is evaluated afresh and never replayed. Two requests
#   taking one expired key over queue on its row lock; the second then sees the first's new
#   expires_at and gets its answer. (DO UPDATE locks the row even when its WHERE is false, so a
#   replay holds the key's row lock until it commits: replays of one key queue, briefly.)
# - Simultaneous exchanges of one launch token under different keys: FOR UPDATE makes them
#   queue on the session row; the first sets session_token_hash, the rest then see it used.
# The session is looked at (and locked) only when the key was claimed: a replay locks no session.
_CLAIM_KEY_LOCK_SESSION = Statement(
    "claim_key_lock_session",
    """
WITH claim AS (
    INSERT INTO idempotency_keys (key, fingerprint, created_at, expires_at)
    VALUES (:key, :fingerprint, :now, :expires_at)
    ON CONFLICT (key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at,
            expires_at = EXCLUDED.expires_at, response = NULL
        WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
    RETURNING key
)
SELECT EXISTS (SELECT FROM claim) AS claimed, session.*
FROM (VALUES (1)) AS one (x)
LEFT JOIN LATERAL (
    SELECT s.id, s.user_id, s.launch_expires_at, s.revoked_at,
           s.session_token_hash IS NOT NULL AS exchanged,
           coalesce(p.blocked, false) AS blocked
    FROM user_sessions s LEFT JOIN players p ON p.user_id = s.user_id
    WHERE s.launch_token_hash = :token_hash AND EXISTS (SELECT FROM claim)
    FOR UPDATE OF s
) AS session ON true
""",
)

_PROCESSED_KEY = Statement(
    "processed_key", "SELECT fingerprint, response FROM idempotency_keys WHERE key = :key"
)


@dataclass(frozen=True)
class ProcessedKey:
    fingerprint: bytes
    response: bytes


@dataclass(frozen=True)
class LockedSession:
    id: int
    user_id: str
    launch_expires_at: datetime
    revoked_at: datetime | None
    exchanged: bool
    blocked: bool


@dataclass(frozen=True)
class Claim:
    """The key was claimed by this transaction; `session` is the launch token's, locked, if any."""

    session: LockedSession | None


async def claim_key(
    conn: Connection,
    *,
    key: uuid.UUID,
    fingerprint: bytes,
    token_hash: bytes,
    now: datetime,
    expires_at: datetime,
) -> Claim | ProcessedKey:
    """Claim `key` and lock the session of `token_hash`, or return what the key already answered."""
    params = {
        "key": key,
        "fingerprint": fingerprint,
        "token_hash": token_hash,
        "now": now,
        "expires_at": expires_at,
    }
    row = await conn.fetchrow(_CLAIM_KEY_LOCK_SESSION, **params)
    assert row is not None  # the statement always answers one row
    if row["claimed"]:
        session = (
            None
            if row["id"] is None
            else LockedSession(
                id=row["id"],
                user_id=row["user_id"],
                launch_expires_at=row["launch_expires_at"],
                revoked_at=row["revoked_at"],
                exchanged=row["exchanged"],
                blocked=row["blocked"],
            )
        )
        return Claim(session=session)
    # A new statement takes a new snapshot, so it sees the winner's committed row.
    processed = await conn.fetchrow(_PROCESSED_KEY, key=key)
    assert processed is not None
    return ProcessedKey(fingerprint=processed["fingerprint"], response=processed["response"])


_EXCHANGE = Statement(
    "exchange",
    """
WITH exchanged AS (
    UPDATE user_sessions SET session_token_hash = :token_hash, session_expires_at = :expires_at
    WHERE id = :session_id
)
UPDATE idempotency_keys SET response = :response WHERE key = :key
""",
)


async def record_exchange(
    conn: Connection,
    *,
    session_id: int,
    token_hash: bytes,
    expires_at: datetime,
    key: uuid.UUID,
    response: bytes,
) -> None:
    """Store the session token's digest and the sealed 200 body in one statement."""
    params = {
        "session_id": session_id,
        "token_hash": token_hash,
        "expires_at": expires_at,
        "key": key,
        "response": response,
    }
    await conn.execute(_EXCHANGE, **params)


_IS_BLOCKED = Statement("is_blocked", "SELECT blocked FROM players WHERE user_id = :user_id")


async def is_blocked(conn: Connection, *, user_id: str) -> bool:
    return bool(await conn.fetchval(_IS_BLOCKED, user_id=user_id))


_SCHEMA_REVISION = Statement("schema_revision", "SELECT version_num FROM alembic_version")


async def schema_revision(conn: Connection) -> str | None:
    revision: str | None = await conn.fetchval(_SCHEMA_REVISION)
    return revision


_SESSION_SETTINGS = Statement(
    "session_settings", "SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"
)


async def session_settings(conn: Connection, names: list[str]) -> dict[str, str]:
    """The server session's values of these settings, in their base unit (milliseconds)."""
    rows = await conn.fetch(_SESSION_SETTINGS, names=names)
    return {row["name"]: row["setting"] for row in rows}


# Purges take rows with SKIP LOCKED, so several replicas running `purge` at once split the
# work instead of queueing on each other; each batch is its own short transaction.
_PURGE_KEYS = Statement(
    "purge_keys",
    """
DELETE FROM idempotency_keys WHERE key IN (
    SELECT key FROM idempotency_keys WHERE expires_at < :now LIMIT :batch FOR UPDATE SKIP LOCKED
)
""",
)

_PURGE_SESSIONS = Statement(
    "purge_sessions",
    """
DELETE FROM user_sessions WHERE id IN (
    SELECT id FROM user_sessions WHERE created_at < :before LIMIT :batch FOR UPDATE SKIP LOCKED
)
""",
)


# Race: a wallet callback moving last_used_at while purge runs. A row the callback holds is
# skipped (SKIP LOCKED); a row purge locked first is re-checked on its newest version before it
# is deleted, so a record used after the cutoff survives. Only a record past the cutoff when
# purge locks it goes, and the callback then finds no session (90 days unused: as intended).
_PURGE_BIDPAW_SESSIONS = Statement(
    "purge_bidpaw_sessions",
    """
DELETE FROM bidpaw_sessions WHERE id IN (
    SELECT id FROM bidpaw_sessions WHERE last_used_at < :before LIMIT :batch FOR UPDATE SKIP LOCKED
)
""",
)


async def purge_keys(conn: Connection, *, now: datetime, batch: int) -> int:
    return await conn.execute(_PURGE_KEYS, now=now, batch=batch)


async def purge_sessions(conn: Connection, *, before: datetime, batch: int) -> int:
    return await conn.execute(_PURGE_SESSIONS, before=before, batch=batch)


async def purge_bidpaw_sessions(conn: Connection, *, before: datetime, batch: int) -> int:
    return await conn.execute(_PURGE_BIDPAW_SESSIONS, before=before, batch=batch)


_SET_BLOCKED = Statement(
    "set_blocked",
    """
WITH player AS (
    INSERT INTO players (user_id, blocked, updated_at) VALUES (:user_id, :blocked, :now)
    ON CONFLICT (user_id) DO UPDATE SET blocked = EXCLUDED.blocked, updated_at = EXCLUDED.updated_at
    RETURNING user_id
)
INSERT INTO player_block_events (user_id, blocked, actor, created_at)
SELECT user_id, :blocked, :actor, :now FROM player
""",
)

# Race: a block against an in-flight /betlink/session or /betlink/authenticate. Every session
# not yet revoked is revoked, expired or not: an exchange that started just before its launch
# token expired may still commit a session token, and it must die with the block too. This runs
# after _SET_BLOCKED holds the player's row lock, so every session created before the block
# is committed and visible here; a session row locked by an in-flight exchange makes this
# wait, then revokes the token that exchange just issued. No live token survives a block.
_REVOKE_SESSIONS = Statement(
    "revoke_sessions",
    """
UPDATE user_sessions SET revoked_at = :now
WHERE user_id = :user_id AND revoked_at IS NULL
""",
)


async def set_blocked(conn: Connection, *, user_id: str, blocked: bool, actor: str, now: datetime) -> int:
    """Record the block state and its audit row; when blocking, revoke every live token.

    Returns how many sessions were revoked.
    """
    params = {"user_id": user_id, "blocked": blocked, "actor": actor, "now": now}
    await conn.execute(_SET_BLOCKED, **params)
    if not blocked:
        return 0
    return await conn.execute(_REVOKE_SESSIONS, user_id=user_id, now=now)


_LIVE_SESSION = Statement(
    "live_session",
    """
SELECT s.user_id, s.session_expires_at
FROM user_sessions s LEFT JOIN players p ON p.user_id = s.user_id
WHERE s.session_token_hash = :token_hash
  AND s.revoked_at IS NULL
  AND s.session_expires_at > :now
  AND NOT coalesce(p.blocked, false)
""",
)


@dataclass(frozen=True)
class LiveSession:
    user_id: str
    expires_at: datetime


async def live_session(conn: Connection, *, token_hash: bytes, now: datetime) -> LiveSession | None:
    """The session holding this session token, if it is live (one unique-index lookup)."""
    row = await conn.fetchrow(_LIVE_SESSION, token_hash=token_hash, now=now)
    return None if row is None else LiveSession(user_id=row["user_id"], expires_at=row["session_expires_at"])


# One short statement after BidPaw's 200 (no transaction held while BidPaw was asked). Every
# open-session gets its own row, even for one player and one session value: the wallet
# callbacks look records up by (user_id, session), and nothing here needs to be unique.
_RECORD_BIDPAW_SESSION = Statement(
    "record_bidpaw_session",
    """
INSERT INTO bidpaw_sessions (user_id, game_id, currency, session, created_at, last_used_at)
VALUES (:user_id, :game_id, :currency, :session, :now, :now)
""",
)


async def record_bidpaw_session(
    conn: Connection,
    *,
    user_id: str,
    game_id: str,
    currency: str | None,
    session: str | None,
    now: datetime,
) -> None:
    """Record a lobby BidPaw opened: the player, gameId, the currency sent, the iframe URL's
    `session` (never its `token`)."""
    params = {"user_id": user_id, "game_id": game_id, "currency": currency, "session": session, "now": now}
    await conn.execute(_RECORD_BIDPAW_SESSION, **params)


# --- BidPaw's wallet transactions (the state machine is wallet/transactions.py) ----------------

_BIDPAW_SESSION_CURRENCIES = Statement(
    "bidpaw_session_currencies",
    """
UPDATE bidpaw_sessions SET last_used_at = :now
WHERE user_id = :user_id AND session = :session
RETURNING currency
""",
)


async def touch_bidpaw_session(
    conn: Connection, *, user_id: str, session: str, now: datetime
) -> list[str | None] | None:
    """The currencies recorded for this player's BidPaw session (None: no such session); its
    `last_used_at` moves to `now`, so purge keeps it while callbacks name it."""
    rows = await conn.fetch(_BIDPAW_SESSION_CURRENCIES, user_id=user_id, session=session, now=now)
    return [row["currency"] for row in rows] if rows else None


# Race: a block committing while a charge is recorded. The upsert takes the player's row lock
# (as _CREATE_SESSION does) and RETURNING reads the newest committed `blocked`: a block that
# committed first refuses the charge here; a block arriving later waits for this transaction,
# so the charge was recorded before the block and goes on.
_LOCK_PLAYER = Statement(
    "lock_player",
    """
INSERT INTO players (user_id, blocked, updated_at) VALUES (:user_id, false, :now)
ON CONFLICT (user_id) DO UPDATE SET blocked = players.blocked
RETURNING blocked
""",
)


async def lock_player(conn: Connection, *, user_id: str, now: datetime) -> bool:
    """Lock the player's row until the transaction ends; True when the player is blocked."""
    return bool(await conn.fetchval(_LOCK_PLAYER, user_id=user_id, now=now))


_WALLET_COLUMNS = """
id, partner, transaction_id, method, user_id, session_id, game_id, amount, currency, fingerprint,
state, answer, outcome, reason, attempts, created_at, answered_at, settled_at
"""

# Race: simultaneous callbacks with one transactionId, in any number of processes. The unique
# (partner, transaction_id) decides: the first INSERT wins; the others wait on its uncommitted
# index entry (bounded by lock_timeout), then insert nothing once it commits and read its row
# with a new statement (a new snapshot) in `wallet_transaction`. A winner that rolled back
# leaves the key free: the next one inserts.
_RECORD_WALLET_TRANSACTION = Statement(
    "record_wallet_transaction",
    f"""
INSERT INTO wallet_transactions (
    partner, transaction_id, method, user_id, session_id, game_id, amount, currency, fingerprint,
    state, answer, answered_at, created_at, next_attempt_at
) VALUES (
    :partner, :transaction_id, :method, :user_id, :session_id, :game_id, :amount, :currency,
    :fingerprint, CASE WHEN CAST(:answer AS smallint) IS NULL THEN 'recorded' ELSE 'final' END,
    :answer, CASE WHEN CAST(:answer AS smallint) IS NULL THEN NULL ELSE CAST(:now AS timestamptz) END,
    :now, :now
)
ON CONFLICT (partner, transaction_id) DO NOTHING
RETURNING {_WALLET_COLUMNS}
""",
)

_WALLET_TRANSACTION = Statement(
    "wallet_transaction",
    f"SELECT {_WALLET_COLUMNS} FROM wallet_transactions WHERE partner = :partner "
    "AND transaction_id = :transaction_id",
)

_WALLET_TRANSACTION_BY_ID = Statement(
    "wallet_transaction_by_id", f"SELECT {_WALLET_COLUMNS} FROM wallet_transactions WHERE id = :id"
)


@dataclass(frozen=True)
class NewWalletTransaction:
    partner: str
    transaction_id: str
    method: str
    user_id: str
    session_id: str
    game_id: str
    amount: int
    currency: str
    fingerprint: bytes


@dataclass(frozen=True)
class WalletTransaction(NewWalletTransaction):
    """A recorded transaction: what BidPaw sent, and where it is in its life."""

    id: int
    state: str
    answer: int | None
    outcome: str | None
    reason: str | None
    attempts: int
    created_at: datetime
    answered_at: datetime | None
    settled_at: datetime | None


def _wallet_transaction(row: Any) -> WalletTransaction:
    return WalletTransaction(**dict(row.items()))


async def record_wallet_transaction(
    conn: Connection, new: NewWalletTransaction, *, now: datetime, answer: int | None = None
) -> WalletTransaction | None:
    """Insert the transaction in state `recorded`, or `final` with `answer` when it is decided
    without the wallet (a blocked player's charge); None when its transactionId is taken."""
    row = await conn.fetchrow(_RECORD_WALLET_TRANSACTION, **vars(new), now=now, answer=answer)
    return None if row is None else _wallet_transaction(row)


async def wallet_transaction(
    conn: Connection, *, partner: str, transaction_id: str
) -> WalletTransaction | None:
    row = await conn.fetchrow(_WALLET_TRANSACTION, partner=partner, transaction_id=transaction_id)
    return None if row is None else _wallet_transaction(row)


async def wallet_transaction_by_id(conn: Connection, *, id: int) -> WalletTransaction | None:
    row = await conn.fetchrow(_WALLET_TRANSACTION_BY_ID, id=id)
    return None if row is None else _wallet_transaction(row)


# Race: the request that recorded a transaction answering it, against `reconcile` answering 8
# for a recording it takes as abandoned (only past the deadline), and against any other writer.
# Every transition names the state it leaves; under READ COMMITTED a second UPDATE waits for
# the first, re-reads the row, finds it moved on and changes nothing. The loser then reads the
# winner's row: a transaction's answer is set exactly once.
_TRANSITION = Statement(
    "transition_wallet_transaction",
    f"""
UPDATE wallet_transactions SET
    state = CAST(:to_state AS text),
    answer = coalesce(answer, CAST(:answer AS smallint)),
    answered_at = coalesce(
        answered_at, CASE WHEN CAST(:answer AS smallint) IS NULL THEN NULL ELSE CAST(:now AS timestamptz) END
    ),
    outcome = coalesce(CAST(:outcome AS text), outcome),
    reason = coalesce(CAST(:reason AS text), reason),
    settled_at = CASE WHEN CAST(:to_state AS text) IN ('final', 'stuck') THEN CAST(:now AS timestamptz) END,
    next_attempt_at = CAST(:now AS timestamptz)
WHERE id = :id AND state = :from_state
RETURNING {_WALLET_COLUMNS}
""",
)


async def transition_wallet_transaction(
    conn: Connection,
    *,
    id: int,
    from_state: str,
    to_state: str,
    answer: int | None,
    outcome: str | None,
    reason: str | None,
    now: datetime,
) -> WalletTransaction | None:
    """Move the transaction from `from_state`; None when it had already left that state."""
    params = {
        "id": id,
        "from_state": from_state,
        "to_state": to_state,
        "answer": answer,
        "outcome": outcome,
        "reason": reason,
        "now": now,
    }
    row = await conn.fetchrow(_TRANSITION, **params)
    return None if row is None else _wallet_transaction(row)


# Several `reconcile`s at once (replicas, a cron and a person): SKIP LOCKED hands each open
# transaction to one of them, and the lease (next_attempt_at) keeps the others off it while the
# wallet is being asked, without holding a transaction open for that long. A recording is taken
# only once its own request must have given up (`abandoned_before`).
_CLAIM_OPEN = Statement(
    "claim_open_wallet_transactions",
    f"""
UPDATE wallet_transactions SET next_attempt_at = :lease_until, attempts = attempts + 1
WHERE id IN (
    SELECT id FROM wallet_transactions
    WHERE state IN ('recorded', 'reversing', 'delivering')
      AND next_attempt_at <= :now
      AND (state <> 'recorded' OR created_at < :abandoned_before)
    ORDER BY next_attempt_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
RETURNING {_WALLET_COLUMNS}
""",
)


async def claim_open_wallet_transactions(
    conn: Connection, *, now: datetime, abandoned_before: datetime, lease_until: datetime, batch: int
) -> list[WalletTransaction]:
    params = {"now": now, "abandoned_before": abandoned_before, "lease_until": lease_until, "batch": batch}
    return [_wallet_transaction(row) for row in await conn.fetch(_CLAIM_OPEN, **params)]


_OPEN_WALLET_STATS = Statement(
    "open_wallet_stats",
    """
SELECT count(*) FILTER (WHERE state <> 'stuck') AS open,
       min(created_at) FILTER (WHERE state <> 'stuck') AS oldest,
       count(*) FILTER (WHERE state = 'stuck') AS stuck
FROM wallet_transactions WHERE state IN ('recorded', 'reversing', 'delivering', 'stuck')
""",
)


@dataclass(frozen=True)
class OpenWalletStats:
    open: int
    oldest: datetime | None
    stuck: int


async def open_wallet_stats(conn: Connection) -> OpenWalletStats:
    row = await conn.fetchrow(_OPEN_WALLET_STATS)
    assert row is not None
    return OpenWalletStats(open=row["open"], oldest=row["oldest"], stuck=row["stuck"])


_WALLET_REPORT = Statement(
    "wallet_report",
    f"""
SELECT {_WALLET_COLUMNS} FROM wallet_transactions
WHERE created_at >= :start AND created_at < :end
ORDER BY created_at, id
""",
)


async def wallet_report(conn: Connection, *, start: datetime, end: datetime) -> list[WalletTransaction]:
    return [_wallet_transaction(row) for row in await conn.fetch(_WALLET_REPORT, start=start, end=end)]

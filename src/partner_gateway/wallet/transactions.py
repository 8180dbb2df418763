"""The state machine of a wallet transaction: BidPaw's charges and credits, moved exactly once.

```
             wallet answered                      reconcile: reverse OK
  recorded ─────────────────────> final     reversing ────────────────────> final (reversed)
     │  charge, outcome unknown ─> reversing    │  reverse REFUSED ──────────> stuck
     │  credit, outcome unknown ─> delivering   delivering ── credit OK ──────> final (applied)
     └─ abandoned (its request died): reconcile   │  credit REFUSED ───────────> stuck
        answers a charge 8 (reversing) and asks     └─ unknown: stays, asked again later
        the wallet for a credit, as the request would
```

The request that records a transaction commits it before the wallet is called and answers it
after, in a second short transaction: no connection is held while the wallet answers. Every
transition is one conditional UPDATE in store.py (`transition_wallet_transaction`), so the
first answer given is the answer for ever, whoever gives it. `reconcile` drives the same
transitions with the same operationIds (`settle`); the rules live only here (`_ANSWERED`).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from partner_gateway import store
from partner_gateway.db import Connection, Database, utc_now
from partner_gateway.logs import get_logger
from partner_gateway.metrics import WALLET_STUCK
from partner_gateway.wallet.client import PARTNER, Kind, Movement, Outcome, WalletAnswer, WalletClient

logger = get_logger(__name__)

T = TypeVar("T")


class Code(enum.IntEnum):
    """The errorCodes BidPaw is answered with (BidPaw defines 0 and 1; the rest are ours)."""

    DONE = 0
    NOT_ENOUGH_BALANCE = 1
    PLAYER_BLOCKED = 2
    UNKNOWN_SESSION = 3
    INVALID_REQUEST = 4
    DUPLICATE_TRANSACTION = 5
    INVALID_SIGNATURE = 6
    REFUSED_BY_WALLET = 7
    TEMPORARY_FAILURE = 8
    IN_PROGRESS = 9

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self]


DESCRIPTIONS = {
    Code.DONE: "",
    Code.NOT_ENOUGH_BALANCE: "Not Enough Balance",
    Code.PLAYER_BLOCKED: "Player blocked",
    Code.UNKNOWN_SESSION: "Unknown session",
    Code.INVALID_REQUEST: "Invalid request",
    Code.DUPLICATE_TRANSACTION: "Duplicate transaction",
    Code.INVALID_SIGNATURE: "Invalid signature",
    Code.REFUSED_BY_WALLET: "Refused by the wallet",
    Code.TEMPORARY_FAILURE: "Temporary failure, nothing charged",
    Code.IN_PROGRESS: "In progress, retry",
}


@dataclass(frozen=True)
class Callback:
    """A checked callback: every parameter present once and well-formed, clientId and gameId ours."""

    method: str  # charge | credit
    user_id: str
    client_id: str
    game_id: str
    session_id: str
    amount: int
    currency: str
    transaction_id: str

    def fingerprint(self) -> bytes:
        """What makes a replay the same call: every parameter (extras are ignored)."""
        fields = [self.method, self.user_id, self.client_id, self.game_id, self.session_id]
        fields += [str(self.amount), self.currency, self.transaction_id]
        return hashlib.sha256(json.dumps(fields).encode()).digest()

    def movement(self) -> Movement:
        return Movement(
            transaction_id=self.transaction_id,
            user_id=self.user_id,
            amount=self.amount,
            currency=self.currency,
            session_id=self.session_id,
            game_id=self.game_id,
        )


@dataclass(frozen=True)
class Answered:
    """What BidPaw is told, and what the wallet did as far as this request knows (for the log)."""

    code: Code
    wallet: str = "not_called"


@dataclass(frozen=True)
class Step:
    to_state: str
    answer: int | None
    outcome: str | None


# The rules: where a recorded transaction goes when the wallet answers its debit or credit.
_ANSWERED: dict[tuple[str, Outcome], Step] = {
    ("charge", Outcome.APPLIED): Step("final", Code.DONE, "applied"),
    ("charge", Outcome.INSUFFICIENT_FUNDS): Step("final", Code.NOT_ENOUGH_BALANCE, "insufficient_funds"),
    ("charge", Outcome.REFUSED): Step("final", Code.REFUSED_BY_WALLET, "refused"),
    # Unknown at the deadline: BidPaw is told nothing was charged, and the debit is reversed.
    ("charge", Outcome.UNKNOWN): Step("reversing", Code.TEMPORARY_FAILURE, None),
    ("credit", Outcome.APPLIED): Step("final", Code.DONE, "applied"),
    ("credit", Outcome.REFUSED): Step("final", Code.REFUSED_BY_WALLET, "refused"),
    # A recorded credit is owed to the player: answered done, delivered until the wallet confirms.
    ("credit", Outcome.UNKNOWN): Step("delivering", Code.DONE, None),
}
# Where a transaction already answered goes when the wallet answers its follow-up call.
_FOLLOWED_UP: dict[tuple[str, Outcome], Step] = {
    ("reversing", Outcome.APPLIED): Step("final", None, "reversed"),
    ("reversing", Outcome.REFUSED): Step("stuck", None, None),
    ("delivering", Outcome.APPLIED): Step("final", None, "applied"),
    ("delivering", Outcome.REFUSED): Step("stuck", None, "refused"),
}


def step_for(method: str, outcome: Outcome) -> Step:
    # A credit is never short of funds; were a wallet to say so, it counts as unknown.
    return _ANSWERED.get((method, outcome)) or _ANSWERED[(method, Outcome.UNKNOWN)]


# If the outcome could not be written, which answers are still certain? Whether the write
# committed or not (reconcile then settles the recording as `settle` does), BidPaw must get the
# same final answer. Only these are the same either way; otherwise the honest answer is 9.
_SAFE_WITHOUT_WRITE: dict[tuple[str, Outcome], Code] = {
    ("charge", Outcome.UNKNOWN): Code.TEMPORARY_FAILURE,  # reconcile answers an abandoned charge 8
    ("credit", Outcome.APPLIED): Code.DONE,  # reconcile re-asks: the wallet repeats its OK
    ("credit", Outcome.REFUSED): Code.REFUSED_BY_WALLET,  # ... or its REFUSED
}


class Clock:
    """One callback's deadline (BIDPAW_WALLET_DEADLINE_SECONDS from its start)."""

    def __init__(self, deadline: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + deadline

    def left(self) -> float:
        return self.deadline - time.monotonic()


# After the deadline, this much more is spent writing the wallet's answer (the contract allows
# the deadline plus one second).
WRITE_GRACE_SECONDS = 0.8
# Time kept back from the wallet call for writing its answer.
WRITE_RESERVE_SECONDS = 0.2
POLL_FIRST_SECONDS = 0.02
POLL_MAX_SECONDS = 0.2


async def _bounded(seconds: float, work: Callable[[], Awaitable[T]]) -> T:
    if seconds <= 0:
        raise TimeoutError
    async with asyncio.timeout(seconds):
        return await work()


async def process(
    database: Database,
    wallet: WalletClient,
    callback: Callback,
    *,
    clock: Clock,
) -> Answered:
    """The callback's session, block and duplicate checks, then exactly-once money."""
    recorded = _Recording(database, callback)
    try:
        result = await _bounded(clock.left(), recorded.run)
    except Exception as exc:
        if not _is_database_failure(exc):
            raise
        # Nothing is recorded, or (the COMMIT was sent) a recording may exist. An abandoned
        # charge is answered 8 by reconcile, so 8 holds either way; an abandoned credit is
        # delivered, so only "nothing recorded" allows 8 for a credit.
        logger.warning("wallet.record_failed", error=type(exc).__name__)
        if callback.method == "credit" and recorded.commit_sent:
            return Answered(Code.IN_PROGRESS)
        return Answered(Code.TEMPORARY_FAILURE)
    if isinstance(result, Code):
        return Answered(result)
    if not recorded.new:
        return await _await_answer(database, result, clock=clock)
    return await _ask_wallet(database, wallet, callback, result, clock=clock)


class _Recording:
    """The first transaction: checks against the database, then the record, committed."""

    def __init__(self, database: Database, callback: Callback) -> None:
        self.database = database
        self.callback = callback
        self.commit_sent = False
        self.new = False

    async def run(self) -> Code | store.WalletTransaction:
        async with self.database.transaction() as conn:
            result = await self._checked(conn)
            self.commit_sent = True  # leaving the block sends COMMIT
        return result

    async def _checked(self, conn: Connection) -> Code | store.WalletTransaction:
        callback, now = self.callback, utc_now()
        existing = await store.wallet_transaction(
            conn, partner=PARTNER, transaction_id=callback.transaction_id
        )
        if existing is not None:
            # A replay is answered from its record (even if the player was blocked since, or
            # the session purged); other parameters under the same transactionId are refused.
            return existing if existing.fingerprint == callback.fingerprint() else Code.DUPLICATE_TRANSACTION
        currencies = await store.touch_bidpaw_session(
            conn, user_id=callback.user_id, session=callback.session_id, now=now
        )
        if currencies is None:
            return Code.UNKNOWN_SESSION
        if None not in currencies and callback.currency not in currencies:
            return Code.INVALID_REQUEST
        if callback.method == "charge" and await store.lock_player(conn, user_id=callback.user_id, now=now):
            return Code.PLAYER_BLOCKED
        new = store.NewWalletTransaction(
            partner=PARTNER,
            transaction_id=callback.transaction_id,
            method=callback.method,
            user_id=callback.user_id,
            session_id=callback.session_id,
            game_id=callback.game_id,
            amount=callback.amount,
            currency=callback.currency,
            fingerprint=callback.fingerprint(),
        )
        recorded = await store.record_wallet_transaction(conn, new, now=now)
        if recorded is not None:
            self.new = True
            return recorded
        # Lost the race to record it (store.py, _RECORD_WALLET_TRANSACTION): the winner's row.
        winner = await store.wallet_transaction(conn, partner=PARTNER, transaction_id=callback.transaction_id)
        assert winner is not None
        return winner if winner.fingerprint == callback.fingerprint() else Code.DUPLICATE_TRANSACTION


def _is_database_failure(exc: BaseException) -> bool:
    from partner_gateway.errors import is_database_unavailable

    return is_database_unavailable(exc)


async def _await_answer(
    database: Database, transaction: store.WalletTransaction, *, clock: Clock
) -> Answered:
    """A duplicate: the recorded answer, waiting for it (polling, no connection held) until the
    deadline; past it, 9 and nothing stored."""
    pause = POLL_FIRST_SECONDS
    current: store.WalletTransaction | None = transaction
    while current is not None and current.answer is None:
        if clock.left() <= pause:
            return Answered(Code.IN_PROGRESS)
        await asyncio.sleep(pause)
        pause = min(pause * 2, POLL_MAX_SECONDS)
        try:
            current = await _bounded(clock.left(), lambda: _read(database, transaction.id))
        except Exception as exc:
            if not _is_database_failure(exc):
                raise
            return Answered(Code.IN_PROGRESS)
    if current is None:  # cannot happen: transactions are never deleted
        return Answered(Code.IN_PROGRESS)
    assert current.answer is not None
    return Answered(Code(current.answer), wallet=current.outcome or "pending")


async def _read(database: Database, id: int) -> store.WalletTransaction | None:
    async with database.statement() as conn:
        return await store.wallet_transaction_by_id(conn, id=id)


async def _ask_wallet(
    database: Database,
    wallet: WalletClient,
    callback: Callback,
    transaction: store.WalletTransaction,
    *,
    clock: Clock,
) -> Answered:
    kind = Kind.DEBIT if callback.method == "charge" else Kind.CREDIT
    answer = await wallet.call(kind, callback.movement(), timeout=clock.left() - WRITE_RESERVE_SECONDS)
    _count_call(kind, answer)
    step = step_for(callback.method, answer.outcome)
    try:
        written = await _bounded(
            clock.left() + WRITE_GRACE_SECONDS,
            lambda: _transition(database, transaction, "recorded", step, reason=answer.reason),
        )
    except Exception as exc:
        if not _is_database_failure(exc):
            raise
        logger.warning("wallet.answer_not_written", transaction_id=callback.transaction_id)
        code = _SAFE_WITHOUT_WRITE.get((callback.method, answer.outcome), Code.IN_PROGRESS)
        return Answered(code, wallet=answer.outcome.value)
    assert written.answer is not None
    return Answered(Code(written.answer), wallet=answer.outcome.value)


async def _transition(
    database: Database,
    transaction: store.WalletTransaction,
    from_state: str,
    step: Step,
    *,
    reason: str | None,
) -> store.WalletTransaction:
    """Apply `step` if the transaction is still in `from_state`; either way, the row as it is now."""
    async with database.transaction() as conn:
        moved = await store.transition_wallet_transaction(
            conn,
            id=transaction.id,
            from_state=from_state,
            to_state=step.to_state,
            answer=step.answer,
            outcome=step.outcome,
            reason=reason,
            now=utc_now(),
        )
        if moved is not None:
            return moved
        # Someone else moved it first (store.py, _TRANSITION): their answer stands.
        current = await store.wallet_transaction_by_id(conn, id=transaction.id)
        assert current is not None
        return current


def _count_call(kind: Kind, answer: WalletAnswer) -> None:
    from partner_gateway.metrics import WALLET_CALLS

    WALLET_CALLS.labels(kind.value, answer.outcome.value).inc()


# --- reconcile: the same transitions, for what the requests left open ---------------------------


@dataclass
class Settled:
    reversed: int = 0
    delivered: int = 0
    answered: int = 0
    still_open: int = 0
    stuck: int = 0


async def settle(
    database: Database, wallet: WalletClient, transaction: store.WalletTransaction, *, tally: Settled
) -> None:
    """One step for one open transaction, as the request that recorded it would have taken it."""
    movement = Movement(
        transaction_id=transaction.transaction_id,
        user_id=transaction.user_id,
        amount=transaction.amount,
        currency=transaction.currency,
        session_id=transaction.session_id,
        game_id=transaction.game_id,
    )
    if transaction.state == "recorded":
        transaction = await _settle_abandoned(database, wallet, transaction, movement)
        tally.answered += 1
        if transaction.method == "credit":
            return  # its credit was just asked; an unknown outcome is delivered next round
    if transaction.state not in _FOLLOW_UP:
        return
    kind = _FOLLOW_UP[transaction.state]
    answer = await wallet.call(kind, movement)
    _count_call(kind, answer)
    step = _FOLLOWED_UP.get((transaction.state, answer.outcome))
    if step is None:
        tally.still_open += 1
        logger.info(
            "wallet.settle_retry",
            transaction_id=transaction.transaction_id,
            state=transaction.state,
            detail=answer.detail,
        )
        return
    done = await _transition(database, transaction, transaction.state, step, reason=answer.reason)
    if done.state == "stuck":
        tally.stuck += 1
        WALLET_STUCK.labels(done.method).inc()
        logger.error(
            "wallet.refused_after_answer",
            transaction_id=done.transaction_id,
            method=done.method,
            answer=done.answer,
            reason=answer.reason,
            action="left for people: the wallet refused what BidPaw was told, see wallet-report",
        )
    elif kind is Kind.REVERSE:
        tally.reversed += 1
    else:
        tally.delivered += 1


_FOLLOW_UP = {"reversing": Kind.REVERSE, "delivering": Kind.CREDIT}


async def _settle_abandoned(
    database: Database, wallet: WalletClient, transaction: store.WalletTransaction, movement: Movement
) -> store.WalletTransaction:
    """A recording whose request died before answering. A charge is never debited now (BidPaw may
    have given up on it): it is answered 8 and reversed. A credit is owed: asked as the request
    would have asked it."""
    if transaction.method == "charge":
        return await _transition(
            database, transaction, "recorded", step_for("charge", Outcome.UNKNOWN), reason=None
        )
    answer = await wallet.call(Kind.CREDIT, movement)
    _count_call(Kind.CREDIT, answer)
    return await _transition(
        database, transaction, "recorded", step_for("credit", answer.outcome), reason=answer.reason
    )


RECONCILE_BATCH = 100
RECONCILE_CONCURRENCY = 8
# Past its deadline plus this, a recording's own request has surely answered or died.
ABANDONED_AFTER_GRACE = timedelta(seconds=5)


async def reconcile(
    database: Database,
    wallet: WalletClient,
    *,
    deadline_seconds: float,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
) -> Settled:
    """Settle every open transaction once: claim batches (SKIP LOCKED, with a lease), step each."""
    tally = Settled()
    stop = stop or asyncio.Event()
    now = now or utc_now()
    abandoned_before = now - timedelta(seconds=deadline_seconds) - ABANDONED_AFTER_GRACE
    lease = timedelta(seconds=wallet.timeout * 3 + 5)
    limit = asyncio.Semaphore(RECONCILE_CONCURRENCY)

    async def one(transaction: store.WalletTransaction) -> None:
        async with limit:
            await settle(database, wallet, transaction, tally=tally)

    while not stop.is_set():
        async with database.transaction() as conn:
            claimed = await store.claim_open_wallet_transactions(
                conn,
                now=now,
                abandoned_before=abandoned_before,
                lease_until=utc_now() + lease,
                batch=RECONCILE_BATCH,
            )
        if not claimed:
            break
        await asyncio.gather(*(one(transaction) for transaction in claimed))
    return tally

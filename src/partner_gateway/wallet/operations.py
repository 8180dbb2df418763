"""`partner-gateway reconcile [--every S]` and `partner-gateway wallet-report`.

`reconcile` drives wallet/transactions.py's state machine (`reconcile`) for every transaction
not yet final; with `--every` it keeps doing so and survives outages of the database and of the
wallet, as `purge --every` does. `wallet-report` lists transactions for reconciliation with
BidPaw's statements.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime

from partner_gateway import store
from partner_gateway.db import Database
from partner_gateway.logs import get_logger
from partner_gateway.maintenance import repeat
from partner_gateway.wallet.client import WalletClient
from partner_gateway.wallet.transactions import Settled, reconcile

logger = get_logger(__name__)


async def reconcile_every(
    database: Database,
    wallet: WalletClient,
    *,
    deadline_seconds: float,
    every: float,
    stop: asyncio.Event,
    on_failure: Callable[[BaseException], str] = repr,
) -> None:
    """Reconcile now and then every `every` seconds until `stop`; a database failure is one log
    line and a retry with backoff (maintenance.repeat, as `purge --every`). The wallet's failures
    need nothing here: its unknown answers leave a transaction open for the next round."""
    await repeat(
        lambda: reconcile(database, wallet, deadline_seconds=deadline_seconds, stop=stop),
        every=every,
        stop=stop,
        event="reconcile",
        report=log_tally,
        log=logger,
        on_failure=on_failure,
    )


def log_tally(tally: Settled) -> None:
    logger.info(
        "reconcile.done",
        answered=tally.answered,
        reversed=tally.reversed,
        delivered=tally.delivered,
        still_open=tally.still_open,
        stuck=tally.stuck,
    )


REPORT_COLUMNS = (
    "transactionId",
    "method",
    "userId",
    "sessionId",
    "gameId",
    "amount",
    "currency",
    "errorCode",
    "state",
    "walletOutcome",
    "walletReason",
    "createdAt",
    "answeredAt",
    "settledAt",
)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def report_row(transaction: store.WalletTransaction) -> dict[str, object]:
    values = (
        transaction.transaction_id,
        transaction.method,
        transaction.user_id,
        transaction.session_id,
        transaction.game_id,
        transaction.amount,
        transaction.currency,
        transaction.answer,
        transaction.state,
        transaction.outcome,
        transaction.reason,
        _iso(transaction.created_at),
        _iso(transaction.answered_at),
        _iso(transaction.settled_at),
    )
    return dict(zip(REPORT_COLUMNS, values, strict=True))


def parse_when(value: str) -> datetime:
    """An ISO 8601 date or time; UTC when no offset is given."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def wallet_report(database: Database, *, start: datetime, end: datetime, format: str) -> str:
    async with database.statement() as conn:
        rows = [report_row(row) for row in await store.wallet_report(conn, start=start, end=end)]
    if format == "json":
        return json.dumps(rows, indent=2) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # A spreadsheet runs a cell that starts with = + - @ as a formula: BidPaw's ids are theirs.
        writer.writerow({key: _cell(value) for key, value in row.items()})
    return out.getvalue()


def _cell(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value

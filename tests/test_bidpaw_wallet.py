"""POST /bidpaw/wallet in process: every check and code, the wallet's exact wire bytes (respx)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.wallet.client import Kind, operation_id
from tests.conftest import GATEWAY_HEADERS
from tests.wallet_helpers import (
    CALLBACK_SECRET,
    CALLBACK_SECRET_ROTATED,
    WALLET_SECRET,
    answer,
    open_bidpaw_session,
    params,
    sign_params,
    signed_get,
    signed_post,
    wallet_settings,
)

WALLET = "https://wallet.test"
ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


def ok(balance: int = 1000) -> httpx.Response:
    return httpx.Response(200, json={"status": "OK", "balance": balance})


@pytest.fixture
async def wallet_client(make_client: ClientFactory, engine: AsyncEngine) -> httpx.AsyncClient:
    await open_bidpaw_session(engine)
    return await make_client(**wallet_settings(WALLET, bidpaw_wallet_deadline_seconds=1.5))


async def transactions(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT * FROM wallet_transactions ORDER BY id"))
        return [dict(row._mapping) for row in rows]


class TestCharge:
    @respx.mock(assert_all_called=False)
    async def test_debits_once_with_signed_exact_body_and_replays_the_same_bytes(
        self, wallet_client: httpx.AsyncClient, respx_mock: respx.MockRouter
    ) -> None:
        route = respx_mock.post(f"{WALLET}/debit").mock(return_value=ok(750))
        values = params(transactionId="tx-1")
        first = await wallet_client.post("/bidpaw/wallet", **signed_post(values))
        again = await wallet_client.post("/bidpaw/wallet", **signed_post(values))
        assert first.status_code == 200
        assert first.content == b'{"errorCode":0,"errorDescription":""}'
        assert again.content == first.content
        assert route.call_count == 1
        request = route.calls[0].request
        op = operation_id(Kind.DEBIT, "tx-1")
        assert json.loads(request.content) == {
            "operationId": op,
            "userId": "player-1",
            "amount": 250,
            "currency": "EUR",
            "partner": "bidpaw",
            "partnerTransactionId": "tx-1",
            "partnerSessionId": "ses-1",
            "gameId": "game-7",
        }
        assert request.headers["Idempotency-Key"] == op
        assert request.headers["Content-Type"] == "application/json"
        t, v1 = (part.split("=", 1)[1] for part in request.headers["X-Wallet-Signature"].split(","))
        expected = hmac.new(WALLET_SECRET.encode(), f"{t}.".encode() + request.content, hashlib.sha256)
        assert v1 == expected.hexdigest()

    @pytest.mark.parametrize(
        ("wallet_answer", "code"),
        [
            ({"status": "INSUFFICIENT_FUNDS", "balance": 10}, 1),
            ({"status": "REFUSED", "reason": "account closed"}, 7),
            ({"status": "OK"}, 8),  # no balance: outside the protocol, so unknown
            ({"status": "ok", "balance": 1}, 8),
            ({"status": "OK", "balance": True}, 8),
        ],
    )
    async def test_maps_the_wallets_answer(
        self, wallet_client: httpx.AsyncClient, wallet_answer: dict[str, Any], code: int
    ) -> None:
        with respx.mock:
            respx.post(f"{WALLET}/debit").mock(return_value=httpx.Response(200, json=wallet_answer))
            response = await wallet_client.post("/bidpaw/wallet", **signed_post(params()))
        assert response.json() == answer(code)

    async def test_unknown_outcome_is_8_and_left_to_reverse(
        self, wallet_client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        with respx.mock:
            respx.post(f"{WALLET}/debit").mock(side_effect=httpx.ConnectError("reset"))
            response = await wallet_client.post("/bidpaw/wallet", **signed_post(params()))
        assert response.json() == answer(8)
        [row] = await transactions(engine)
        assert (row["state"], row["answer"], row["outcome"]) == ("reversing", 8, None)

    async def test_get_form_is_answered_the_same(self, wallet_client: httpx.AsyncClient) -> None:
        with respx.mock:
            respx.post(f"{WALLET}/debit").mock(return_value=ok())
            response = await wallet_client.get("/bidpaw/wallet", **signed_get(params()))
        assert response.json() == answer(0)


class TestRefusals:
    async def test_unsigned_wrong_and_repeated_sign_are_6(self, wallet_client: httpx.AsyncClient) -> None:
        values = params()
        body = json.dumps(values)
        unsigned = await wallet_client.post("/bidpaw/wallet", content=body)
        wrong = await wallet_client.post("/bidpaw/wallet", content=body, headers={"sign": "0" * 64})
        repeated = await wallet_client.post(
            "/bidpaw/wallet",
            content=body,
            headers=[("sign", sign_params(values)), ("sign", sign_params(values))],
        )
        for response in (unsigned, wrong, repeated):
            assert response.json() == answer(6)

    async def test_either_rotated_secret_verifies(self, wallet_client: httpx.AsyncClient) -> None:
        with respx.mock:
            respx.post(f"{WALLET}/debit").mock(return_value=ok())
            for secret in (CALLBACK_SECRET, CALLBACK_SECRET_ROTATED):
                response = await wallet_client.post("/bidpaw/wallet", **signed_post(params(), secret))
                assert response.json() == answer(0)

    @pytest.mark.parametrize(
        "overrides",
        [
            {"method": "refund"},
            {"amount": 0},
            {"amount": 1_000_001},
            {"amount": 2.5},
            {"amount": "250"},
            {"currency": "eur"},
            {"currency": "XXX"},
            {"clientId": "other"},
            {"gameId": "other"},
            {"transactionId": ""},
            {"sessionId": "a\nb"},
            {"userId": None},
        ],
    )
    async def test_malformed_parameters_are_4(
        self, wallet_client: httpx.AsyncClient, overrides: dict[str, Any]
    ) -> None:
        response = await wallet_client.post("/bidpaw/wallet", **signed_post(params(**overrides)))
        assert response.json() == answer(4)

    async def test_unknown_session_is_3_and_other_currency_4(self, wallet_client: httpx.AsyncClient) -> None:
        unknown = await wallet_client.post("/bidpaw/wallet", **signed_post(params(sessionId="nope")))
        other = await wallet_client.post("/bidpaw/wallet", **signed_post(params(userId="player-2")))
        currency = await wallet_client.post("/bidpaw/wallet", **signed_post(params(currency="USD")))
        assert unknown.json() == answer(3)
        assert other.json() == answer(3)
        assert currency.json() == answer(4)

    async def test_blocked_player_charge_is_2_credit_goes_through(
        self, wallet_client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        blocked = await wallet_client.put("/players/player-1/block", headers={**GATEWAY_HEADERS})
        assert blocked.status_code == 204
        with respx.mock:
            respx.post(f"{WALLET}/credit").mock(return_value=ok())
            charge = await wallet_client.post("/bidpaw/wallet", **signed_post(params()))
            credit = await wallet_client.post("/bidpaw/wallet", **signed_post(params("credit")))
        assert charge.json() == answer(2)
        assert credit.json() == answer(0)
        assert [row["method"] for row in await transactions(engine)] == ["credit"]

    async def test_other_parameters_under_a_used_transaction_id_are_5(
        self, wallet_client: httpx.AsyncClient
    ) -> None:
        with respx.mock:
            respx.post(f"{WALLET}/debit").mock(return_value=ok())
            first = await wallet_client.post("/bidpaw/wallet", **signed_post(params(transactionId="t5")))
            other = await wallet_client.post(
                "/bidpaw/wallet", **signed_post(params(transactionId="t5", amount=251))
            )
        assert first.json() == answer(0)
        assert other.json() == answer(5)


class TestDuplicatesInFlight:
    async def test_a_duplicate_waits_for_the_first_answer(self, wallet_client: httpx.AsyncClient) -> None:
        async def slow(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0.6)
            return ok()

        values = params()
        with respx.mock:
            route = respx.post(f"{WALLET}/debit").mock(side_effect=slow)
            first = asyncio.create_task(wallet_client.post("/bidpaw/wallet", **signed_post(values)))
            await asyncio.sleep(0.2)
            duplicate = await wallet_client.post("/bidpaw/wallet", **signed_post(values))
            answered = await first
        assert answered.json() == duplicate.json() == answer(0)
        assert route.call_count == 1

    async def test_unanswered_at_the_deadline_is_9_then_reconcile_decides_8_and_reverses(
        self, wallet_client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        """The wallet applied the debit, but its answer cannot be written (the row is locked):
        neither request may say 0 or 8, since the recording is still open; both say 9."""
        values = params()
        held = await engine.connect()
        locked = await held.begin()

        async def applied_then_locked(request: httpx.Request) -> httpx.Response:
            await held.execute(text("SELECT 1 FROM wallet_transactions FOR UPDATE"))
            return ok()

        try:
            with respx.mock:
                respx.post(f"{WALLET}/debit").mock(side_effect=applied_then_locked)
                first = asyncio.create_task(wallet_client.post("/bidpaw/wallet", **signed_post(values)))
                await asyncio.sleep(0.3)
                duplicate = await wallet_client.post("/bidpaw/wallet", **signed_post(values))
                answered = await first
        finally:
            await locked.rollback()
            await held.close()
        assert duplicate.json() == answer(9)
        assert answered.json() == answer(9)
        [row] = await transactions(engine)
        assert (row["state"], row["answer"]) == ("recorded", None)


def test_operation_ids_differ_by_kind_and_never_collide() -> None:
    assert operation_id(Kind.DEBIT, "x") == operation_id(Kind.DEBIT, "x")
    assert operation_id(Kind.REVERSE, "x") != operation_id(Kind.DEBIT, "x")
    assert operation_id(Kind.DEBIT, "x\x00reverse") != operation_id(Kind.REVERSE, "x")
    uuid.UUID(operation_id(Kind.CREDIT, "x"))


class TestAnyInput:
    @pytest.mark.parametrize(
        "body",
        [
            b"\xff\xfe not utf-8",
            b"[" * 20000 + b"]" * 20000,
            b'{"method": "charge\\u0000"}',
            b"[1, 2]",
            b"null",
            b'{"a": ' * 3000 + b"1" + b"}" * 3000,
        ],
    )
    async def test_malformed_bodies_are_answered_in_bidpaws_shape(
        self, wallet_client: httpx.AsyncClient, body: bytes
    ) -> None:
        response = await wallet_client.post("/bidpaw/wallet", content=body, headers={"sign": "0" * 64})
        assert response.status_code == 200
        assert response.json() == answer(6)

    async def test_with_signatures_off_malformed_is_4_and_unsigned_goes_through(
        self, make_client: ClientFactory, engine: AsyncEngine
    ) -> None:
        await open_bidpaw_session(engine)
        client = await make_client(**wallet_settings(WALLET, bidpaw_callback_signature="off"))
        with respx.mock:
            respx.post(f"{WALLET}/debit").mock(return_value=ok())
            unsigned = await client.post("/bidpaw/wallet", json=params())
        malformed = await client.post("/bidpaw/wallet", content=b"\xff")
        bad_query = await client.get("/bidpaw/wallet?method=%ff")
        assert unsigned.json() == answer(0)
        assert malformed.json() == answer(4)
        assert bad_query.json() == answer(4)

    async def test_without_a_callback_secret_every_callback_is_6(
        self, make_client: ClientFactory, engine: AsyncEngine
    ) -> None:
        await open_bidpaw_session(engine)
        client = await make_client(**wallet_settings(WALLET, bidpaw_callback_secret=""))
        assert (await client.post("/bidpaw/wallet", **signed_post(params()))).json() == answer(6)

    async def test_a_parameter_repeated_across_query_and_body_is_4(
        self, wallet_client: httpx.AsyncClient
    ) -> None:
        values = params()
        pairs = [("amount", "1"), *values.items()]  # the query's amount, then the body's
        response = await wallet_client.post(
            "/bidpaw/wallet",
            params={"amount": "1"},
            content=json.dumps(values),
            headers={"sign": sign_params(pairs)},
        )
        assert response.json() == answer(4)

    async def test_other_methods_are_405_and_large_bodies_413_problem_json(
        self, wallet_client: httpx.AsyncClient
    ) -> None:
        put = await wallet_client.put("/bidpaw/wallet", content=b"{}")
        large = await wallet_client.post("/bidpaw/wallet", content=b"{" + b" " * 70000 + b"}")
        assert (put.status_code, put.headers["content-type"]) == (405, "application/problem+json")
        assert (large.status_code, large.headers["content-type"]) == (413, "application/problem+json")

    async def test_the_log_line_names_the_callback_and_no_secret(
        self, wallet_client: httpx.AsyncClient
    ) -> None:
        values = params()
        signed = signed_post(values)
        with respx.mock, structlog.testing.capture_logs() as logs:
            respx.post(f"{WALLET}/debit").mock(return_value=ok())
            await wallet_client.post("/bidpaw/wallet", **signed)
        [line] = [entry for entry in logs if entry["event"] == "bidpaw.wallet_callback"]
        assert {
            k: line[k] for k in ("method", "transaction_id", "amount", "currency", "error_code", "wallet")
        } == {
            "method": "charge",
            "transaction_id": values["transactionId"],
            "amount": 250,
            "currency": "EUR",
            "error_code": 0,
            "wallet": "applied",
        }
        assert "duration_ms" in line
        text = repr(logs)
        for secret in (signed["headers"]["sign"], CALLBACK_SECRET, WALLET_SECRET):
            assert secret not in text

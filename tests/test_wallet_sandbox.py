"""`partner-gateway wallet-sandbox`, over a real socket: the protocol's answers, its ledger, replays,
reversals before and after their debit, signatures with rotation, and every fault switch."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from partner_gateway.wallet import signing
from partner_gateway.wallet.sandbox import Faults, MoveRequest, ReverseRequest, create_app
from tests.processes import free_port, wait_listening, wallet_sandbox

NEW_KEY = "wallet-key-new-Zx81"
OLD_KEY = "wallet-key-old-Qp27"
START = 100_000
TIMEOUT = httpx.Timeout(10.0)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """One sandbox process for the module, keys `NEW_KEY,OLD_KEY` (a rotation under way)."""
    port = free_port()
    started = time.monotonic()
    proc = wallet_sandbox(port, secrets=f"{NEW_KEY},{OLD_KEY}")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(f"{url}/_sandbox/faults", proc, timeout=30)
        print(f"[wallet-sandbox] listening after {time.monotonic() - started:.2f} s", file=sys.stderr)  # noqa: T201
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=TIMEOUT) as client:
        client.delete("/_sandbox/faults").raise_for_status()
        client.delete("/_sandbox/ledger").raise_for_status()
        yield client


def move(operation_id: str, *, user: str = "u1", amount: int = 2500, currency: str = "EUR") -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "userId": user,
        "amount": amount,
        "currency": currency,
        "partner": "bidpaw",
        "partnerTransactionId": f"tx-{operation_id}",
        "partnerSessionId": "s-1",
        "gameId": "game-1",
    }


def reversal(operation_id: str, reverses: str, *, user: str = "u1", amount: int = 2500) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "reverses": reverses,
        "userId": user,
        "amount": amount,
        "currency": "EUR",
    }


def signed_headers(
    raw: bytes, key: str | None, *, secret: str = NEW_KEY, timestamp: int | None = None
) -> dict[str, str]:
    t = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        signing.HEADER: signing.signature(secret=secret, timestamp=t, body=raw),
    }
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def call(
    http: httpx.Client, kind: str, body: dict[str, Any], *, raw: bytes | None = None, **signature: Any
) -> httpx.Response:
    raw = json.dumps(body).encode() if raw is None else raw
    return http.post(
        f"/{kind}", content=raw, headers=signed_headers(raw, body.get("operationId"), **signature)
    )


def balance(http: httpx.Client, user: str = "u1", currency: str = "EUR") -> int:
    answer = http.get(f"/_sandbox/balance/{user}", params={"currency": currency}).json()
    return int(answer["balance"])


def operations(http: httpx.Client) -> dict[str, dict[str, Any]]:
    return {op["operationId"]: op for op in http.get("/_sandbox/ledger").json()["operations"]}


def calls(http: httpx.Client) -> dict[str, int]:
    answer: dict[str, int] = http.get("/_sandbox/calls").json()
    return answer


def faults(http: httpx.Client, **switches: Any) -> None:
    http.put("/_sandbox/faults", json=switches).raise_for_status()


UNAUTHORIZED = {
    "status": "UNAUTHORIZED",
    "reason": "X-Wallet-Signature missing, repeated, wrong or too old",
}


class TestDebitAndCredit:
    def test_a_debit_is_applied_and_answers_the_new_balance(self, http: httpx.Client) -> None:
        response = call(http, "debit", move("d1"))
        assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
        assert response.json() == {"status": "OK", "balance": START - 2500}
        assert balance(http) == START - 2500
        assert http.get("/_sandbox/ledger").json() == {
            "startingBalance": START,
            "balances": [{"userId": "u1", "currency": "EUR", "balance": START - 2500}],
            "operations": [
                {
                    "operationId": "d1",
                    "kind": "debit",
                    "userId": "u1",
                    "amount": 2500,
                    "currency": "EUR",
                    "partnerTransactionId": "tx-d1",
                    "reverses": None,
                    "state": "applied",
                    "reason": None,
                    "net": -2500,
                }
            ],
        }

    def test_a_credit_is_applied_and_answers_the_new_balance(self, http: httpx.Client) -> None:
        assert call(http, "credit", move("c1", amount=700)).json() == {"status": "OK", "balance": START + 700}
        assert operations(http)["c1"]["state"] == "applied"
        assert operations(http)["c1"]["net"] == 700

    def test_a_debit_over_the_balance_is_insufficient_funds_and_moves_nothing(
        self, http: httpx.Client
    ) -> None:
        response = call(http, "debit", move("d1", amount=START + 1))
        assert response.json() == {"status": "INSUFFICIENT_FUNDS", "balance": START}
        assert balance(http) == START
        assert operations(http)["d1"]["state"] == "insufficient_funds"

    def test_a_debit_of_the_whole_balance_is_applied(self, http: httpx.Client) -> None:
        assert call(http, "debit", move("d1", amount=START)).json() == {"status": "OK", "balance": 0}

    def test_each_player_and_currency_has_its_own_balance(self, http: httpx.Client) -> None:
        call(http, "debit", move("d1", currency="USD"))
        call(http, "credit", move("c1", user="u2"))
        assert (balance(http, "u1", "USD"), balance(http, "u1", "EUR"), balance(http, "u2", "EUR")) == (
            START - 2500,
            START,
            START + 2500,
        )


class TestReplays:
    @pytest.mark.parametrize("kind", ["debit", "credit"])
    def test_a_replay_answers_the_same_bytes_and_moves_nothing(self, http: httpx.Client, kind: str) -> None:
        first = call(http, kind, move("op1"))
        second = call(http, kind, move("op1"))
        assert (second.status_code, second.content) == (first.status_code, first.content)
        assert balance(http) == first.json()["balance"]
        assert list(operations(http)) == ["op1"]

    def test_a_replay_answers_the_first_balance_not_todays(self, http: httpx.Client) -> None:
        first = call(http, "debit", move("d1"))
        call(http, "credit", move("c1", amount=9))
        assert call(http, "debit", move("d1")).content == first.content == b'{"status":"OK","balance":97500}'

    def test_an_insufficient_funds_answer_is_replayed_even_after_a_top_up(self, http: httpx.Client) -> None:
        first = call(http, "debit", move("d1", amount=START + 1))
        call(http, "credit", move("c1", amount=START))
        assert call(http, "debit", move("d1", amount=START + 1)).content == first.content
        assert balance(http) == 2 * START

    def test_the_same_body_spelt_otherwise_is_a_replay(self, http: httpx.Client) -> None:
        body = move("d1")
        first = call(http, "debit", body)
        respelt = json.dumps(dict(reversed(body.items())), indent=2).encode()
        assert call(http, "debit", body, raw=respelt).content == first.content
        assert balance(http) == START - 2500

    @pytest.mark.parametrize(
        ("kind", "body"),
        [
            pytest.param("debit", move("op1", amount=2501), id="another amount"),
            pytest.param("debit", move("op1", user="u2"), id="another player"),
            pytest.param("credit", move("op1"), id="the same body as a credit"),
            pytest.param("reverse", reversal("op1", "d0"), id="the key as a reversal"),
        ],
    )
    def test_another_request_under_a_used_key_is_409_and_moves_nothing(
        self, http: httpx.Client, kind: str, body: dict[str, Any]
    ) -> None:
        call(http, "debit", move("op1"))
        response = call(http, kind, body)
        assert response.status_code == 409
        assert response.json() == {
            "status": "CONFLICT",
            "reason": "Idempotency-Key already used with another request",
        }
        assert balance(http) == START - 2500
        assert balance(http, "u2") == START
        assert call(http, "debit", move("op1")).json() == {"status": "OK", "balance": START - 2500}

    def test_a_duplicate_waits_for_the_first_calls_answer(self, http: httpx.Client, base_url: str) -> None:
        faults(http, slow_seconds=3, slow_phase="after")
        raw = json.dumps(move("d1")).encode()
        with httpx.Client(base_url=base_url, timeout=TIMEOUT) as other:
            pending = _in_thread(lambda: other.post("/debit", content=raw, headers=signed_headers(raw, "d1")))
            _until(lambda: calls(http)["received"] == 1)
            http.delete("/_sandbox/faults")  # the duplicate itself is not slowed
            duplicate = _in_thread(lambda: call(http, "debit", move("d1")))
            _until(lambda: calls(http)["received"] == 2)
            assert not pending.done()
            assert duplicate.running()  # held behind the first, as behind a row lock
            first = pending.result(timeout=30)
            assert duplicate.result(timeout=30).content == first.content

    async def test_simultaneous_calls_with_one_key_apply_once(
        self, http: httpx.Client, base_url: str
    ) -> None:
        faults(http, slow_seconds=0.3, slow_phase="after")
        raw = json.dumps(move("d1")).encode()
        clients = [httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) for _ in range(30)]
        try:
            answers = await asyncio.gather(
                *(client.post("/debit", content=raw, headers=signed_headers(raw, "d1")) for client in clients)
            )
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))
        assert {(answer.status_code, answer.content) for answer in answers} == {
            (200, b'{"status":"OK","balance":97500}')
        }
        assert balance(http) == START - 2500
        assert list(operations(http)) == ["d1"]


class TestReversals:
    def test_a_reversal_undoes_an_applied_debit_once(self, http: httpx.Client) -> None:
        call(http, "debit", move("d1"))
        first = call(http, "reverse", reversal("r1", "d1"))
        assert first.json() == {"status": "OK", "balance": START}
        assert call(http, "reverse", reversal("r1", "d1")).content == first.content
        assert call(http, "reverse", reversal("r2", "d1")).json() == {"status": "OK", "balance": START}
        assert balance(http) == START
        ops = operations(http)
        assert (ops["d1"]["state"], ops["d1"]["net"]) == ("reversed", 0)
        assert (ops["r1"]["state"], ops["r1"]["reverses"], ops["r1"]["partnerTransactionId"]) == (
            "applied",
            "d1",
            "tx-d1",
        )
        assert ops["r2"]["state"] == "noop"

    def test_a_replayed_debit_after_its_reversal_moves_nothing(self, http: httpx.Client) -> None:
        first = call(http, "debit", move("d1"))
        call(http, "reverse", reversal("r1", "d1"))
        assert call(http, "debit", move("d1")).content == first.content
        assert balance(http) == START

    def test_a_reversal_before_its_debit_tombstones_it(self, http: httpx.Client) -> None:
        assert call(http, "reverse", reversal("r1", "d1")).json() == {"status": "OK", "balance": START}
        late = call(http, "debit", move("d1"))
        assert late.json() == {"status": "REFUSED", "reason": "reversed before it arrived"}
        assert call(http, "debit", move("d1")).content == late.content
        assert balance(http) == START
        ops = operations(http)
        assert (ops["r1"]["state"], ops["d1"]["state"], ops["d1"]["net"]) == ("tombstone", "refused", 0)

    def test_a_debit_that_was_not_applied_has_nothing_to_undo(self, http: httpx.Client) -> None:
        call(http, "debit", move("d1", amount=START + 1))
        assert call(http, "reverse", reversal("r1", "d1", amount=START + 1)).json() == {
            "status": "OK",
            "balance": START,
        }
        assert operations(http)["r1"]["state"] == "noop"

    def test_a_reversal_that_does_not_match_its_debit_is_refused(self, http: httpx.Client) -> None:
        call(http, "debit", move("d1"))
        assert call(http, "reverse", reversal("r1", "d1", amount=1)).json() == {
            "status": "REFUSED",
            "reason": "userId, amount or currency differ from the debit's",
        }
        assert balance(http) == START - 2500

    def test_a_credit_cannot_be_reversed(self, http: httpx.Client) -> None:
        call(http, "credit", move("c1"))
        assert call(http, "reverse", reversal("r1", "c1")).json() == {
            "status": "REFUSED",
            "reason": "only a debit can be reversed",
        }
        assert balance(http) == START + 2500


class TestSignatures:
    @pytest.mark.parametrize(
        "signature",
        [
            pytest.param({"secret": "not-a-wallet-key"}, id="wrong key"),
            pytest.param({"skew": -301 - 60}, id="older than five minutes"),
            pytest.param({"skew": 301 + 60}, id="five minutes ahead"),
        ],
    )
    def test_a_refused_signature_is_401_and_moves_nothing(
        self, http: httpx.Client, signature: dict[str, Any]
    ) -> None:
        # The time is taken now, not when the parameters were collected (minutes earlier in a
        # whole-suite run, which once made "ahead" fall inside the window).
        if "skew" in signature:
            signature = {"timestamp": int(time.time()) + signature["skew"]}
        response = call(http, "debit", move("d1"), **signature)
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
        assert balance(http) == START
        assert operations(http) == {}
        assert call(http, "debit", move("d1")).json()["status"] == "OK"  # a 401 is not an answer kept

    def test_a_signature_four_minutes_old_is_accepted(self, http: httpx.Client) -> None:
        assert call(http, "debit", move("d1"), timestamp=int(time.time()) - 240).json()["status"] == "OK"

    def test_the_older_key_of_a_rotation_is_accepted(self, http: httpx.Client) -> None:
        assert call(http, "credit", move("c1"), secret=OLD_KEY).json()["status"] == "OK"

    def test_a_missing_signature_is_401(self, http: httpx.Client) -> None:
        raw = json.dumps(move("d1")).encode()
        response = http.post("/debit", content=raw, headers={"Idempotency-Key": "d1"})
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)

    def test_a_repeated_signature_header_is_401(self, http: httpx.Client) -> None:
        raw = json.dumps(move("d1")).encode()
        headers = signed_headers(raw, "d1")
        response = http.post(
            "/debit", content=raw, headers=[*headers.items(), (signing.HEADER, headers[signing.HEADER])]
        )
        assert response.status_code == 401

    def test_a_signature_of_another_body_is_401(self, http: httpx.Client) -> None:
        raw = json.dumps(move("d1")).encode()
        headers = signed_headers(json.dumps(move("d1", amount=1)).encode(), "d1")
        assert http.post("/debit", content=raw, headers=headers).status_code == 401
        assert balance(http) == START


class TestMalformedCalls:
    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            pytest.param(b"{not json", "body: Invalid JSON", id="not JSON"),
            pytest.param(b"[]", "body: Input should be an object", id="not an object"),
            pytest.param(
                json.dumps({**move("d1"), "amount": "2500"}).encode(), "amount: ", id="amount a string"
            ),
            pytest.param(
                json.dumps({**move("d1"), "amount": 25.0}).encode(), "amount: ", id="amount a float"
            ),
            pytest.param(
                json.dumps({**move("d1"), "amount": True}).encode(), "amount: ", id="amount a boolean"
            ),
            pytest.param(json.dumps({**move("d1"), "amount": 0}).encode(), "amount: ", id="amount zero"),
            pytest.param(
                json.dumps({**move("d1"), "currency": "eur"}).encode(), "currency: ", id="currency case"
            ),
            pytest.param(
                json.dumps({k: v for k, v in move("d1").items() if k != "gameId"}).encode(),
                "gameId: Field required",
                id="a field missing",
            ),
        ],
    )
    def test_a_malformed_body_is_400(self, http: httpx.Client, raw: bytes, reason: str) -> None:
        response = http.post("/debit", content=raw, headers=signed_headers(raw, "d1"))
        assert response.status_code == 400
        assert response.json()["status"] == "BAD_REQUEST"
        assert response.json()["reason"].startswith(reason)
        assert operations(http) == {}

    @pytest.mark.parametrize("key", [None, "d2"])
    def test_an_idempotency_key_missing_or_not_the_operation_id_is_400(
        self, http: httpx.Client, key: str | None
    ) -> None:
        raw = json.dumps(move("d1")).encode()
        response = http.post("/debit", content=raw, headers=signed_headers(raw, key))
        assert (response.status_code, response.json()) == (
            400,
            {"status": "BAD_REQUEST", "reason": "Idempotency-Key must occur once and equal operationId"},
        )

    def test_a_body_over_64_kib_is_413(self, http: httpx.Client) -> None:
        raw = json.dumps({**move("d1"), "padding": "x" * 70_000}).encode()
        assert http.post("/debit", content=raw, headers=signed_headers(raw, "d1")).status_code == 413

    def test_unknown_paths_and_methods_answer_json(self, http: httpx.Client) -> None:
        assert http.post("/withdraw").json() == {"status": "NOT_FOUND", "reason": "Not Found"}
        response = http.get("/debit")
        assert (response.status_code, response.json()["status"]) == (405, "METHOD_NOT_ALLOWED")


class TestFaults:
    def test_slow_before_the_ledger_lets_a_reversal_overtake_its_debit(
        self, http: httpx.Client, base_url: str
    ) -> None:
        faults(http, slow_seconds=3, slow_phase="before")
        raw = json.dumps(move("d1")).encode()
        with httpx.Client(base_url=base_url, timeout=TIMEOUT) as other:
            started = time.monotonic()
            pending = _in_thread(lambda: other.post("/debit", content=raw, headers=signed_headers(raw, "d1")))
            _until(lambda: calls(http) == {"received": 1, "inFlight": 1})
            assert operations(http) == {}  # the debit is in flight, not in the ledger
            http.delete("/_sandbox/faults")
            assert call(http, "reverse", reversal("r1", "d1")).json() == {"status": "OK", "balance": START}
            late = pending.result(timeout=30)
        assert time.monotonic() - started >= 3
        assert late.json() == {"status": "REFUSED", "reason": "reversed before it arrived"}
        assert balance(http) == START

    def test_slow_after_the_ledger_applies_before_it_answers(self, http: httpx.Client, base_url: str) -> None:
        faults(http, slow_seconds=3, slow_phase="after")
        raw = json.dumps(move("d1")).encode()
        with httpx.Client(base_url=base_url, timeout=TIMEOUT) as other:
            started = time.monotonic()
            pending = _in_thread(lambda: other.post("/debit", content=raw, headers=signed_headers(raw, "d1")))
            _until(lambda: "d1" in operations(http))
            assert operations(http)["d1"]["state"] == "applied"
            assert not pending.done()
            assert pending.result(timeout=30).json() == {"status": "OK", "balance": START - 2500}
        assert time.monotonic() - started >= 3

    def test_a_slow_rate_of_zero_slows_nothing(self, http: httpx.Client) -> None:
        faults(http, slow_seconds=5, slow_rate=0)
        started = time.monotonic()
        call(http, "debit", move("d1"))
        assert time.monotonic() - started < 4

    def test_an_error_is_500_and_applies_nothing(self, http: httpx.Client) -> None:
        faults(http, error_rate=1)
        response = call(http, "debit", move("d1"))
        assert (response.status_code, response.json()) == (
            500,
            {"status": "ERROR", "reason": "sandbox fault: error, nothing applied"},
        )
        assert (balance(http), operations(http)) == (START, {})
        http.delete("/_sandbox/faults")
        assert call(http, "debit", move("d1")).json() == {"status": "OK", "balance": START - 2500}

    def test_a_lost_answer_is_500_after_applying(self, http: httpx.Client) -> None:
        faults(http, lose_answer_rate=1)
        response = call(http, "debit", move("d1"))
        assert (response.status_code, response.json()) == (
            500,
            {"status": "ERROR", "reason": "sandbox fault: applied, answer lost"},
        )
        assert balance(http) == START - 2500
        http.delete("/_sandbox/faults")
        assert call(http, "debit", move("d1")).json() == {"status": "OK", "balance": START - 2500}
        assert balance(http) == START - 2500

    def test_a_dropped_answer_closes_the_connection_after_applying(self, http: httpx.Client) -> None:
        faults(http, lose_answer_rate=1, lose_answer_as="drop")
        with pytest.raises(httpx.RemoteProtocolError):
            call(http, "debit", move("d1"))
        assert balance(http) == START - 2500
        http.delete("/_sandbox/faults")
        assert call(http, "debit", move("d1")).json() == {"status": "OK", "balance": START - 2500}

    def test_refused_is_kept_as_the_answer_and_spares_reversals(self, http: httpx.Client) -> None:
        call(http, "debit", move("d0"))
        faults(http, refuse_rate=1)
        refused = {"status": "REFUSED", "reason": "sandbox fault: refused"}
        assert call(http, "debit", move("d1")).json() == refused
        assert call(http, "credit", move("c1")).json() == refused
        assert call(http, "reverse", reversal("r0", "d0")).json() == {"status": "OK", "balance": START}
        http.delete("/_sandbox/faults")
        assert call(http, "debit", move("d1")).json() == refused
        assert balance(http) == START

    def test_insufficient_funds_refuses_every_new_debit_not_credits(self, http: httpx.Client) -> None:
        faults(http, insufficient_funds=True)
        assert call(http, "debit", move("d1", amount=1)).json() == {
            "status": "INSUFFICIENT_FUNDS",
            "balance": START,
        }
        assert call(http, "credit", move("c1", amount=1)).json() == {"status": "OK", "balance": START + 1}

    def test_a_seed_repeats_the_same_faults(self, http: httpx.Client) -> None:
        def run() -> list[int]:
            http.delete("/_sandbox/ledger")
            faults(http, error_rate=0.5, seed=1234)
            return [call(http, "credit", move(f"c{i}", amount=1)).status_code for i in range(24)]

        first = run()
        assert set(first) == {200, 500}
        assert run() == first

    def test_the_switches_are_read_back_and_reset(self, http: httpx.Client) -> None:
        faults(http, slow_seconds=2, error_rate=0.25, seed=9)
        assert http.get("/_sandbox/faults").json() == {
            "slow_seconds": 2.0,
            "slow_rate": 1.0,
            "slow_phase": "before",
            "error_rate": 0.25,
            "lose_answer_rate": 0.0,
            "lose_answer_as": "500",
            "refuse_rate": 0.0,
            "insufficient_funds": False,
            "seed": 9,
        }
        assert http.delete("/_sandbox/faults").json()["error_rate"] == 0.0

    @pytest.mark.parametrize(
        "switches",
        [
            {"error_rate": 1.5},
            {"slow_seconds": -1},
            {"lose_answer_as": "hang"},
            {"eror_rate": 1},
            {"seed": "7"},
        ],
    )
    def test_a_malformed_switch_is_400_and_changes_nothing(
        self, http: httpx.Client, switches: dict[str, Any]
    ) -> None:
        faults(http, error_rate=0.5)
        response = http.put("/_sandbox/faults", json=switches)
        assert (response.status_code, response.json()["status"]) == (400, "BAD_REQUEST")
        assert http.get("/_sandbox/faults").json()["error_rate"] == 0.5


class TestAdmin:
    def test_a_balance_can_be_set(self, http: httpx.Client) -> None:
        response = http.put("/_sandbox/balance/u1", params={"currency": "EUR"}, json={"balance": 1000})
        assert response.json() == {"userId": "u1", "currency": "EUR", "balance": 1000}
        assert call(http, "debit", move("d1", amount=1001)).json() == {
            "status": "INSUFFICIENT_FUNDS",
            "balance": 1000,
        }

    @pytest.mark.parametrize("query", [{}, {"currency": "eur"}, {"currency": "EURO1"}])
    def test_a_balance_needs_a_currency(self, http: httpx.Client, query: dict[str, str]) -> None:
        assert http.get("/_sandbox/balance/u1", params=query).status_code == 400

    def test_calls_are_counted(self, http: httpx.Client) -> None:
        call(http, "debit", move("d1"))
        call(http, "debit", move("d1"))
        call(http, "debit", move("d2"), secret="wrong-key")  # refused before it counts
        assert calls(http) == {"received": 2, "inFlight": 0}

    def test_deleting_the_ledger_forgets_balances_operations_keys_and_counts(
        self, http: httpx.Client
    ) -> None:
        call(http, "debit", move("d1"))
        assert http.delete("/_sandbox/ledger").json() == {
            "startingBalance": START,
            "balances": [],
            "operations": [],
        }
        assert call(http, "debit", move("d1")).json() == {"status": "OK", "balance": START - 2500}
        assert calls(http)["received"] == 1


class TestProtocolPage:
    """docs/wallet-protocol.md's examples stay true: the wallet team checks their code against them."""

    PAGE = (Path(__file__).parent.parent / "docs" / "wallet-protocol.md").read_text()

    def _example(self) -> tuple[str, int, bytes, str]:
        section = self.PAGE.split("## A worked example")[1].split("\n## ")[0]
        secret = re.search(r"^\| `WALLET_SECRET` \| `([^`]+)` \|$", section, re.MULTILINE)
        timestamp = re.search(r"^\| `t` \| `(\d+)`", section, re.MULTILINE)
        body = re.search(r"^```json\n(.*)\n```$", section, re.MULTILINE)
        header = re.search(rf"^{signing.HEADER}: (\S+)$", section, re.MULTILINE)
        assert secret
        assert timestamp
        assert body
        assert header
        return secret[1], int(timestamp[1]), body[1].encode(), header[1]

    def test_the_worked_example_signature_is_what_the_service_sends(self) -> None:
        secret, timestamp, body, header = self._example()
        assert f"exactly these {len(body)} bytes" in self.PAGE
        assert signing.signature(secret=secret, timestamp=timestamp, body=body) == header
        assert signing.verify(header, secrets=[secret], body=body, now=timestamp)
        assert f"printf '%s.%s' \"$t\" \"$body\" | openssl dgst -sha256 -hmac '{secret}'" in self.PAGE
        assert f"SHA2-256(stdin)= {header.split('v1=')[1]}" in self.PAGE
        assert not signing.verify(header, secrets=[secret], body=body + b" ", now=timestamp)
        assert not signing.verify(header, secrets=[secret], body=body, now=timestamp + 301)

    def test_the_sandbox_answers_the_worked_example_as_the_page_says(self, http: httpx.Client) -> None:
        secret, _, body, _ = self._example()
        operation = json.loads(body)
        # The module's sandbox takes NEW_KEY and OLD_KEY; the example's secret is its own.
        first = call(http, "debit", operation, raw=body)
        assert first.content == b'{"status":"OK","balance":97500}'
        assert '`{"status":"OK","balance":97500}`' in self.PAGE
        assert call(http, "debit", operation, raw=body).content == first.content
        assert balance(http, operation["userId"]) == START - 2500
        assert secret not in (NEW_KEY, OLD_KEY)

    def test_the_request_examples_are_what_the_sandbox_accepts(self) -> None:
        blocks = re.findall(r"^```json\n(.*)\n```$", self.PAGE, re.MULTILINE)
        move_example, reverse_example = blocks[0], blocks[1]
        assert set(json.loads(move_example)) == set(move("x"))
        MoveRequest.model_validate_json(move_example)
        assert set(json.loads(reverse_example)) == set(reversal("x", "y"))
        ReverseRequest.model_validate_json(reverse_example)

    def test_the_page_lists_every_admin_route(self) -> None:
        routes = create_app(secrets=["k"]).routes
        admin = {
            route.path for route in routes if isinstance(route, Route) and route.path.startswith("/_sandbox")
        }
        assert len(admin) == 4  # faults, ledger, balance, calls
        for path in admin:
            assert path.replace("{user_id}", "{userId}") in self.PAGE, path

    def test_the_page_lists_every_fault_switch_and_flag(self) -> None:
        switches = ", ".join(f'"{name}"' for name in Faults.model_fields)
        assert f"`{{{switches}}}`" in self.PAGE
        for name in Faults.model_fields:
            flag = "--" + name.replace("_", "-")
            assert flag in self.PAGE, flag


class TestCommandLine:
    def test_flags_set_the_starting_balance_and_the_faults(self, tmp_path: Path) -> None:
        port = free_port()
        log = tmp_path / "sandbox.log"
        with log.open("wb") as output:
            args = (
                "--starting-balance",
                "500",
                "--insufficient-funds",
                "--refuse-rate",
                "0.5",
                "--seed",
                "3",
            )
            proc = wallet_sandbox(port, *args, secrets=NEW_KEY, stdout=output, LOG_LEVEL="INFO")
            try:
                wait_listening(f"http://127.0.0.1:{port}/_sandbox/faults", proc, timeout=30)
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:
                    switches = http.get("/_sandbox/faults").json()
                    assert (switches["insufficient_funds"], switches["refuse_rate"], switches["seed"]) == (
                        True,
                        0.5,
                        3,
                    )
                    assert balance(http) == 500
                    assert call(http, "credit", move("c1", amount=1)).status_code == 200
            finally:
                proc.terminate()
                assert proc.wait(timeout=15) == 0
        text = log.read_text()
        assert "wallet sandbox listening" in text
        assert NEW_KEY not in text
        assert "v1=" not in text

    def test_without_wallet_secret_it_refuses_to_start_in_one_line(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "partner_gateway", "wallet-sandbox", "--port", str(free_port())],
            env={**_environment_without("WALLET_SECRET")},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2
        assert done.stderr.decode().splitlines() == [
            "partner-gateway: configuration error: WALLET_SECRET is required: "
            "the keys the wallet accepts, comma-separated, newest first"
        ]


def _environment_without(name: str) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != name}


def _until(condition: Callable[[], bool], *, timeout: float = 20) -> None:
    """Poll `condition` until it holds (a loaded machine may take a while), or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


def _in_thread(request: Callable[[], httpx.Response]) -> Future[httpx.Response]:
    """`request()`, started in a thread of its own."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(request)
    pool.shutdown(wait=False)
    return future

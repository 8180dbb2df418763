"""The casino's wallet, outbound: one door (`WalletClient.call`) for debit, credit and reverse.

Every call is signed (`X-Wallet-Signature`, wallet/signing.py) over exactly the bytes sent and
carries its `operationId` as `Idempotency-Key`, so a retry is the same operation. The wallet's
answer is mapped exactly as the contract says; anything else (another status, a body that is not
the documented JSON, a timeout after the request was sent, a reset connection, a body larger
than `MAX_ANSWER_BYTES`) is UNKNOWN, never success: the caller asks again later.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from partner_gateway.wallet import signing

MAX_ANSWER_BYTES = 8192
PARTNER = "bidpaw"
# operationIds are UUIDv5 names under this namespace: the same partner, kind and transaction
# id give the same id on every retry, in every process, and no transaction id (whatever
# characters it holds) can spell another transaction's id, or its reversal's.
OPERATION_NAMESPACE = uuid.UUID("6c0c3e56-8f0f-4b0e-9a43-5a7e0b3c2d11")


class Kind(enum.StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"
    REVERSE = "reverse"


class Outcome(enum.StrEnum):
    APPLIED = "applied"  # `OK`: applied now or earlier (a reversal: the debit is undone or tombstoned)
    INSUFFICIENT_FUNDS = "insufficient_funds"  # a debit only
    REFUSED = "refused"  # a definitive no
    UNKNOWN = "unknown"  # anything else: ask again with the same operationId


@dataclass(frozen=True)
class WalletAnswer:
    outcome: Outcome
    balance: int | None = None
    reason: str | None = None
    detail: str = ""  # for logs: why an answer counted as unknown (never a secret)


def operation_id(kind: Kind, transaction_id: str, *, partner: str = PARTNER) -> str:
    return str(uuid.uuid5(OPERATION_NAMESPACE, f"{partner}\x00{kind.value}\x00{transaction_id}"))


@dataclass(frozen=True)
class Movement:
    """What a debit or credit moves: the fields of the wallet protocol's body."""

    transaction_id: str
    user_id: str
    amount: int
    currency: str
    session_id: str
    game_id: str

    def body(self, kind: Kind) -> dict[str, Any]:
        if kind is Kind.REVERSE:
            return {
                "operationId": operation_id(Kind.REVERSE, self.transaction_id),
                "reverses": operation_id(Kind.DEBIT, self.transaction_id),
                "userId": self.user_id,
                "amount": self.amount,
                "currency": self.currency,
            }
        return {
            "operationId": operation_id(kind, self.transaction_id),
            "userId": self.user_id,
            "amount": self.amount,
            "currency": self.currency,
            "partner": PARTNER,
            "partnerTransactionId": self.transaction_id,
            "partnerSessionId": self.session_id,
            "gameId": self.game_id,
        }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def interpret(kind: Kind, status: int, body: bytes) -> WalletAnswer:
    """The contract's table of answers; everything outside it is UNKNOWN."""
    if status != 200:
        return WalletAnswer(Outcome.UNKNOWN, detail=f"status {status}")
    try:
        answer = json.loads(body)
    except ValueError:
        return WalletAnswer(Outcome.UNKNOWN, detail="not JSON")
    if not isinstance(answer, dict):
        return WalletAnswer(Outcome.UNKNOWN, detail="not a JSON object")
    status_field, balance = answer.get("status"), answer.get("balance")
    if status_field == "OK" and _is_int(balance):
        return WalletAnswer(Outcome.APPLIED, balance=balance)
    if status_field == "INSUFFICIENT_FUNDS" and kind is Kind.DEBIT and _is_int(balance):
        return WalletAnswer(Outcome.INSUFFICIENT_FUNDS, balance=balance)
    if status_field == "REFUSED" and isinstance(answer.get("reason"), str):
        return WalletAnswer(Outcome.REFUSED, reason=answer["reason"][:200])
    return WalletAnswer(Outcome.UNKNOWN, detail="an answer outside the protocol")


class WalletClient:
    """The casino's wallet at WALLET_URL, around one injected `httpx.AsyncClient`."""

    def __init__(
        self, http: httpx.AsyncClient, *, url: str, secrets: Sequence[SecretStr], timeout: float
    ) -> None:
        self.http = http
        self._url = url.rstrip("/")
        self._secret = secrets[0].get_secret_value()  # the newest signs
        self.timeout = timeout

    async def call(self, kind: Kind, movement: Movement, *, timeout: float | None = None) -> WalletAnswer:
        """One attempt of `kind` for `movement`, within `timeout` (at most WALLET_TIMEOUT_SECONDS)."""
        budget = self.timeout if timeout is None else min(timeout, self.timeout)
        if budget <= 0:
            return WalletAnswer(Outcome.UNKNOWN, detail="no time left")
        body = movement.body(kind)
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": body["operationId"],
            signing.HEADER: signing.signature(secret=self._secret, timestamp=int(time.time()), body=raw),
        }
        try:
            # httpx's timeouts are per phase and per chunk: the whole call has one deadline.
            async with asyncio.timeout(budget):
                return await self._send(kind, raw, headers)
        except TimeoutError:
            return WalletAnswer(Outcome.UNKNOWN, detail="timeout")
        except httpx.HTTPError as exc:
            return WalletAnswer(Outcome.UNKNOWN, detail=type(exc).__name__)

    async def _send(self, kind: Kind, raw: bytes, headers: dict[str, str]) -> WalletAnswer:
        request = self.http.build_request("POST", f"{self._url}/{kind.value}", content=raw, headers=headers)
        response = await self.http.send(request, stream=True)
        try:
            received = bytearray()
            async for chunk in response.aiter_bytes():  # decoded, so the bound holds for gzip too
                received += chunk
                if len(received) > MAX_ANSWER_BYTES:
                    return WalletAnswer(Outcome.UNKNOWN, detail="answer too large")
        finally:
            await response.aclose()
        return interpret(kind, response.status_code, bytes(received))

"""A stand-in for the casino's wallet (`partner-gateway wallet-sandbox`), for development, tests, staging.

It speaks the casino wallet protocol (docs/wallet-protocol.md) as a casino should:
- `POST /debit`, `/credit`, `/reverse`, each signed (`X-Wallet-Signature`, any of `secrets`,
  at most five minutes old: else `401`) and carrying `Idempotency-Key: <operationId>`;
- a ledger: a balance per (player, currency), every unseen pair starting at `starting_balance`,
  and every operation it decided, with its state;
- idempotency: a key seen before is answered with the very bytes of its first answer and moves
  nothing; the same key with another body is refused with `409` (an answer the service counts as
  unknown, so a bug on either side stays visible instead of being settled);
- reversals: a reversal undoes its debit once; a reversal that arrives before its debit leaves a
  tombstone, and the late debit is answered `REFUSED`.

Faults, for tests and staging, are switched on the command line or by `PUT /_sandbox/faults`:
slow (before or after the ledger), `500` without touching the ledger, applied-but-answer-lost
(a `500`, or the connection closed after the headers), refused, not enough balance; drawn from
one seeded random generator, so a run with the same seed and the same call order repeats.

The state lives in memory, in one process: a restart forgets every balance and operation. The
`/_sandbox/...` admin routes (faults, ledger, balances) are not signed: bind the sandbox to an
address only its tests and operators reach.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic.alias_generators import to_camel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from partner_gateway.config import ConfigError
from partner_gateway.logs import get_logger
from partner_gateway.wallet import signing

ADMIN_PREFIX = "/_sandbox"
MAX_BODY_BYTES = 65536
MAX_AMOUNT = 2**53 - 1  # what a JSON number carries exactly everywhere

logger = get_logger("partner_gateway.wallet.sandbox")

OperationId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Amount = Annotated[int, Field(gt=0, le=MAX_AMOUNT)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3,4}$")]
Rate = Annotated[float, Field(ge=0, le=1)]


class _Wire(BaseModel):
    # Strict: an amount of "100", 100.0 or true is malformed, not 100. Unknown fields are ignored.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", alias_generator=to_camel)


class MoveRequest(_Wire):
    """The body of `/debit` and `/credit`."""

    operation_id: OperationId
    user_id: Text
    amount: Amount
    currency: Currency
    partner: Text
    partner_transaction_id: Text
    partner_session_id: Text
    game_id: Text


class ReverseRequest(_Wire):
    """The body of `/reverse`: undo debit `reverses`."""

    operation_id: OperationId
    reverses: OperationId
    user_id: Text
    amount: Amount
    currency: Currency


class Faults(BaseModel):
    """The fault switches; every field is optional in `PUT /_sandbox/faults`, missing ones are off.

    Rates are probabilities per protocol call. `slow_seconds` delays a call (a share `slow_rate`
    of them) before the ledger sees it (`slow_phase="before"`: a late debit may then meet its
    reversal's tombstone) or after the ledger decided (`"after"`: applied, answered late).
    `error_rate`: a `500`, the ledger untouched. `lose_answer_rate`: the call is decided (applied
    or replayed), then its answer is lost: a `500` (`lose_answer_as="500"`) or the connection
    closed after the status line and headers (`"drop"`). `refuse_rate`: a new debit or credit is
    answered `REFUSED` (reversals are never refused). `insufficient_funds`: every new debit is
    answered `INSUFFICIENT_FUNDS`. `seed`: the random generator's seed (none: a fresh one).
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    slow_seconds: Annotated[float, Field(ge=0, le=600)] = 0.0
    slow_rate: Rate = 1.0
    slow_phase: Literal["before", "after"] = "before"
    error_rate: Rate = 0.0
    lose_answer_rate: Rate = 0.0
    lose_answer_as: Literal["500", "drop"] = "500"
    refuse_rate: Rate = 0.0
    insufficient_funds: bool = False
    seed: int | None = None


class _BalanceUpdate(_Wire):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    balance: Annotated[int, Field(ge=0, le=MAX_AMOUNT)]


@dataclass
class Operation:
    """One operation the ledger decided. `state`, by kind:

    debit: `applied`, `reversed` (applied, then undone), `insufficient_funds`, `refused`;
    credit: `applied`, `refused`;
    reverse: `applied` (its debit undone), `tombstone` (its debit not seen yet: refused should it
    come), `noop` (its debit was not applied, or was already undone), `refused`.
    """

    operation_id: str
    kind: Literal["debit", "credit", "reverse"]
    user_id: str
    amount: int
    currency: str
    partner_transaction_id: str | None
    reverses: str | None
    state: str
    reason: str | None = None

    @property
    def net(self) -> int:
        """Its lasting effect on the balance; a reversal's shows on the debit it undid."""
        if self.state != "applied" or self.kind == "reverse":
            return 0
        return -self.amount if self.kind == "debit" else self.amount

    def as_json(self) -> dict[str, Any]:
        return {
            "operationId": self.operation_id,
            "kind": self.kind,
            "userId": self.user_id,
            "amount": self.amount,
            "currency": self.currency,
            "partnerTransactionId": self.partner_transaction_id,
            "reverses": self.reverses,
            "state": self.state,
            "reason": self.reason,
            "net": self.net,
        }


def _ok(balance: int) -> dict[str, Any]:
    return {"status": "OK", "balance": balance}


def _refused(reason: str) -> dict[str, Any]:
    return {"status": "REFUSED", "reason": reason}


@dataclass
class Ledger:
    """Balances and operations. Its methods never await: each decision is atomic in the event loop."""

    starting_balance: int
    balances: dict[tuple[str, str], int] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    # A reversal that came before its debit, by the debit's operationId.
    tombstones: dict[str, Operation] = field(default_factory=dict)

    def balance(self, user_id: str, currency: str) -> int:
        return self.balances.get((user_id, currency), self.starting_balance)

    def _move(self, user_id: str, currency: str, delta: int) -> int:
        balance = self.balance(user_id, currency) + delta
        self.balances[(user_id, currency)] = balance
        return balance

    def _record(
        self, request: MoveRequest, kind: Literal["debit", "credit"], state: str, reason: str | None
    ) -> None:
        self.operations[request.operation_id] = Operation(
            request.operation_id,
            kind,
            request.user_id,
            request.amount,
            request.currency,
            request.partner_transaction_id,
            None,
            state,
            reason,
        )

    def debit(self, request: MoveRequest, *, refuse: bool, insufficient: bool) -> dict[str, Any]:
        balance = self.balance(request.user_id, request.currency)
        if request.operation_id in self.tombstones:
            reason = "reversed before it arrived"
            self._record(request, "debit", "refused", reason)
            return _refused(reason)
        if refuse:
            self._record(request, "debit", "refused", "sandbox fault: refused")
            return _refused("sandbox fault: refused")
        if insufficient or request.amount > balance:
            self._record(request, "debit", "insufficient_funds", None)
            return {"status": "INSUFFICIENT_FUNDS", "balance": balance}
        self._record(request, "debit", "applied", None)
        return _ok(self._move(request.user_id, request.currency, -request.amount))

    def credit(self, request: MoveRequest, *, refuse: bool) -> dict[str, Any]:
        if refuse:
            self._record(request, "credit", "refused", "sandbox fault: refused")
            return _refused("sandbox fault: refused")
        self._record(request, "credit", "applied", None)
        return _ok(self._move(request.user_id, request.currency, request.amount))

    def reverse(self, request: ReverseRequest) -> dict[str, Any]:
        debit = self.operations.get(request.reverses)
        reversal = Operation(
            request.operation_id,
            "reverse",
            request.user_id,
            request.amount,
            request.currency,
            debit.partner_transaction_id if debit else None,
            request.reverses,
            "noop",
        )
        self.operations[request.operation_id] = reversal
        balance = self.balance(request.user_id, request.currency)
        if debit is None:
            reversal.state = "tombstone"
            self.tombstones.setdefault(request.reverses, reversal)
            return _ok(balance)
        if debit.kind != "debit":
            reversal.state, reversal.reason = "refused", "only a debit can be reversed"
            return _refused(reversal.reason)
        if (debit.user_id, debit.amount, debit.currency) != (
            request.user_id,
            request.amount,
            request.currency,
        ):
            reversal.state, reversal.reason = "refused", "userId, amount or currency differ from the debit's"
            return _refused(reversal.reason)
        if debit.state != "applied":
            return _ok(balance)  # never applied, or undone already: nothing to undo
        debit.state, reversal.state = "reversed", "applied"
        return _ok(self._move(request.user_id, request.currency, request.amount))

    def as_json(self) -> dict[str, Any]:
        return {
            "startingBalance": self.starting_balance,
            "balances": [
                {"userId": user_id, "currency": currency, "balance": balance}
                for (user_id, currency), balance in sorted(self.balances.items())
            ],
            "operations": [operation.as_json() for operation in self.operations.values()],
        }


@dataclass(frozen=True)
class _Answer:
    status_code: int
    body: bytes


@dataclass(frozen=True)
class _Draw:
    """One protocol call's fault decisions, drawn together in a fixed order."""

    slow: bool
    error: bool
    lose: bool
    refuse: bool

    @classmethod
    def of(cls, faults: Faults, rng: random.Random) -> _Draw:
        slow, error, lose, refuse = (rng.random() for _ in range(4))
        return cls(
            slow=faults.slow_seconds > 0 and slow < faults.slow_rate,
            error=error < faults.error_rate,
            lose=lose < faults.lose_answer_rate,
            refuse=refuse < faults.refuse_rate,
        )


class _Drop(Exception):
    """Close the connection after the headers of `answer`: the answer is lost in transit."""

    def __init__(self, answer: _Answer) -> None:
        self.answer = answer


def _json(status_code: int, value: dict[str, Any]) -> _Answer:
    return _Answer(status_code, json.dumps(value, separators=(",", ":")).encode())


def _error(status_code: int, status: str, reason: str) -> _Answer:
    return _json(status_code, {"status": status, "reason": reason})


def _respond(answer: _Answer) -> Response:
    return Response(answer.body, status_code=answer.status_code, media_type="application/json")


def _problem(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it is longer than MAX_BODY_BYTES."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class WalletSandbox:
    """The ledger, the idempotency records and the faults behind one app."""

    def __init__(self, *, secrets: Sequence[str], starting_balance: int, faults: Faults) -> None:
        if not secrets:
            raise ValueError("the wallet sandbox needs at least one WALLET_SECRET")
        self.secrets = list(secrets)
        self.starting_balance = starting_balance
        self.ledger = Ledger(starting_balance)
        # Idempotency-Key -> (what was asked: the path and the parsed body, its first answer).
        self.answers: dict[str, tuple[tuple[str, BaseModel], _Answer]] = {}
        # One lock per key in use: duplicates wait for the first call's answer, as behind a row lock.
        self.locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def reset(self) -> None:
        self.ledger = Ledger(self.starting_balance)
        self.answers.clear()

    async def call(self, kind: str, request: Request) -> _Answer:
        """One protocol call: signature, body, faults, then the ledger under the key's lock."""
        body = await _read_body(request)
        if body is None:
            return _error(413, "BAD_REQUEST", f"the body is longer than {MAX_BODY_BYTES} bytes")
        signatures = request.headers.getlist(signing.HEADER)
        now = int(time.time())
        if len(signatures) != 1 or not signing.verify(
            signatures[0], secrets=self.secrets, body=body, now=now
        ):
            return _error(401, "UNAUTHORIZED", "X-Wallet-Signature missing, repeated, wrong or too old")
        model = ReverseRequest if kind == "reverse" else MoveRequest
        try:
            parsed: MoveRequest | ReverseRequest = model.model_validate_json(body)
        except ValidationError as exc:
            return _error(400, "BAD_REQUEST", _problem(exc))
        keys = request.headers.getlist("Idempotency-Key")
        if keys != [parsed.operation_id]:
            return _error(400, "BAD_REQUEST", "Idempotency-Key must occur once and equal operationId")
        faults = self.faults  # as they were when the call came, whatever a PUT does meanwhile
        draw = _Draw.of(faults, self.rng)
        if draw.slow and faults.slow_phase == "before":
            await asyncio.sleep(faults.slow_seconds)
        if draw.error:
            return _error(500, "ERROR", "sandbox fault: error, nothing applied")
        lock = self.locks.setdefault(parsed.operation_id, asyncio.Lock())
        async with lock:
            answer = self._decide(kind, parsed, draw, faults)
            if draw.slow and faults.slow_phase == "after":
                await asyncio.sleep(faults.slow_seconds)
        if draw.lose and faults.lose_answer_as == "drop":
            raise _Drop(answer)
        if draw.lose:
            return _error(500, "ERROR", "sandbox fault: applied, answer lost")
        return answer

    def _decide(
        self, kind: str, parsed: MoveRequest | ReverseRequest, draw: _Draw, faults: Faults
    ) -> _Answer:
        asked = (kind, parsed)
        seen = self.answers.get(parsed.operation_id)
        if seen is not None:
            first_asked, first_answer = seen
            if first_asked != asked:
                return _error(409, "CONFLICT", "Idempotency-Key already used with another request")
            return first_answer
        if isinstance(parsed, ReverseRequest):
            outcome = self.ledger.reverse(parsed)
        elif kind == "debit":
            outcome = self.ledger.debit(parsed, refuse=draw.refuse, insufficient=faults.insufficient_funds)
        else:
            outcome = self.ledger.credit(parsed, refuse=draw.refuse)
        answer = _json(200, outcome)
        self.answers[parsed.operation_id] = (asked, answer)
        return answer


class _DropConnection:
    """Turns `_Drop` into the status line and headers of its answer, then a closed connection:
    uvicorn closes a connection whose handler returns before the body it announced was sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except _Drop as drop:
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(drop.answer.body)).encode()),
            ]
            await send({"type": "http.response.start", "status": drop.answer.status_code, "headers": headers})


def create_app(
    *, secrets: Sequence[str], starting_balance: int = 100_000, faults: Faults | None = None
) -> Starlette:
    """The wallet sandbox as an ASGI app; `app.state.sandbox` is its `WalletSandbox` (ledger, faults)."""
    sandbox = WalletSandbox(secrets=secrets, starting_balance=starting_balance, faults=faults or Faults())

    def protocol(kind: str) -> Route:
        async def endpoint(request: Request) -> Response:
            answer = await sandbox.call(kind, request)
            logger.info("wallet_sandbox.call", operation=kind, http_status=answer.status_code)
            return _respond(answer)

        return Route(f"/{kind}", endpoint, methods=["POST"])

    routes = [protocol("debit"), protocol("credit"), protocol("reverse"), *_admin_routes(sandbox)]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_DropConnection)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.sandbox = sandbox
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _respond(_error(exc.status_code, HTTPStatus(exc.status_code).name, exc.detail))


def _admin_routes(sandbox: WalletSandbox) -> list[Route]:
    async def get_faults(request: Request) -> Response:
        return _respond(_json(200, sandbox.faults.model_dump()))

    async def put_faults(request: Request) -> Response:
        try:
            sandbox.set_faults(Faults.model_validate_json(await request.body()))
        except ValidationError as exc:
            return _respond(_error(400, "BAD_REQUEST", _problem(exc)))
        logger.info("wallet_sandbox.faults", **sandbox.faults.model_dump())
        return await get_faults(request)

    async def delete_faults(request: Request) -> Response:
        sandbox.set_faults(Faults())
        return await get_faults(request)

    async def get_ledger(request: Request) -> Response:
        return _respond(_json(200, sandbox.ledger.as_json()))

    async def delete_ledger(request: Request) -> Response:
        sandbox.reset()
        return await get_ledger(request)

    async def balance(request: Request) -> Response:
        user_id: str = request.path_params["user_id"]
        currency = request.query_params.get("currency", "")
        if (
            not currency.isascii()
            or not currency.isalpha()
            or not 3 <= len(currency) <= 4
            or not currency.isupper()
        ):
            return _respond(_error(400, "BAD_REQUEST", "currency: 3 or 4 upper-case letters, in the query"))
        if request.method == "PUT":
            try:
                update = _BalanceUpdate.model_validate_json(await request.body())
            except ValidationError as exc:
                return _respond(_error(400, "BAD_REQUEST", _problem(exc)))
            sandbox.ledger.balances[(user_id, currency)] = update.balance
        answer = {
            "userId": user_id,
            "currency": currency,
            "balance": sandbox.ledger.balance(user_id, currency),
        }
        return _respond(_json(200, answer))

    return [
        Route(f"{ADMIN_PREFIX}/faults", get_faults, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/faults", put_faults, methods=["PUT"]),
        Route(f"{ADMIN_PREFIX}/faults", delete_faults, methods=["DELETE"]),
        Route(f"{ADMIN_PREFIX}/ledger", get_ledger, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/ledger", delete_ledger, methods=["DELETE"]),
        Route(f"{ADMIN_PREFIX}/balance/{{user_id}}", balance, methods=["GET", "PUT"]),
    ]


def run_sandbox(
    *, host: str, port: int, secrets: Sequence[str], starting_balance: int, faults: Faults
) -> None:
    """Serve the wallet sandbox until interrupted (`partner-gateway wallet-sandbox`)."""
    import uvicorn

    logger.info(
        "wallet sandbox listening",
        url=f"http://{host}:{port}",
        starting_balance=starting_balance,
        keys=len(secrets),
        **faults.model_dump(),
    )
    uvicorn.run(
        create_app(secrets=secrets, starting_balance=starting_balance, faults=faults),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


def secrets_from_environment() -> list[str]:
    """`WALLET_SECRET`'s keys, newest first. The sandbox is the casino's side, not the service:
    it reads the one variable it shares with the service and no other setting."""
    keys = [key.strip() for key in os.environ.get("WALLET_SECRET", "").split(",") if key.strip()]
    if not keys:
        raise ConfigError(
            "WALLET_SECRET is required: the keys the wallet accepts, comma-separated, newest first"
        )
    return keys


def _rate(value: str) -> float:
    rate = float(value)
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return rate


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 0 <= seconds <= 600:
        raise argparse.ArgumentTypeError("must be between 0 and 600 seconds")
    return seconds


def _cents(value: str) -> int:
    cents = int(value)
    if not 0 <= cents <= MAX_AMOUNT:
        raise argparse.ArgumentTypeError("must be a whole number of cents, 0 or more")
    return cents


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's flags: where to listen, the starting balance, and the faults at start."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument(
        "--starting-balance",
        type=_cents,
        default=100_000,
        metavar="CENTS",
        help="of every new player and currency",
    )
    faults = parser.add_argument_group("faults at start (PUT /_sandbox/faults changes them later)")
    faults.add_argument("--slow-seconds", type=_seconds, default=0.0, metavar="S")
    faults.add_argument("--slow-rate", type=_rate, default=1.0, metavar="R", help="share of calls made slow")
    faults.add_argument("--slow-phase", choices=["before", "after"], default="before", help="of the ledger")
    faults.add_argument("--error-rate", type=_rate, default=0.0, metavar="R", help="500, nothing applied")
    faults.add_argument(
        "--lose-answer-rate", type=_rate, default=0.0, metavar="R", help="applied, answer lost"
    )
    faults.add_argument("--lose-answer-as", choices=["500", "drop"], default="500")
    faults.add_argument(
        "--refuse-rate", type=_rate, default=0.0, metavar="R", help="debits and credits REFUSED"
    )
    faults.add_argument(
        "--insufficient-funds", action="store_true", help="every new debit INSUFFICIENT_FUNDS"
    )
    faults.add_argument("--seed", type=int, default=None, help="of the faults' random generator")


def faults_from_arguments(args: argparse.Namespace) -> Faults:
    return Faults(
        slow_seconds=args.slow_seconds,
        slow_rate=args.slow_rate,
        slow_phase=args.slow_phase,
        error_rate=args.error_rate,
        lose_answer_rate=args.lose_answer_rate,
        lose_answer_as=args.lose_answer_as,
        refuse_rate=args.refuse_rate,
        insufficient_funds=args.insufficient_funds,
        seed=args.seed,
    )

"""The real service with BidPaw's wallet broken, one way per request: what `certify --bidpaw-wallet`
must catch.

`python -m tests.certify.wallet_faults PORT` serves the app (settings from the environment, as
`serve`) with the patches below installed. Each patch is a small change to the service's own code
(the signature check skipped, the block not looked at, a fingerprint that ignores the amount...)
and is active only while a request that carries `X-Certify-Fault: <breakage>` is being handled
(a ContextVar, so each request sees only its own fault, and one process serves many runs). The
header is removed before the app sees it.

`BREAKAGES` names each breakage and the checks it breaks: the first is the one it was written
for, which must fail; the others are checks that also see it (they replay, or block), which may
fail with it. No other check may fail.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

FAULT_HEADER = b"x-certify-fault"
ACTIVE: ContextVar[str | None] = ContextVar("certify_wallet_fault", default=None)

REPLAY_CHECKS = (
    "bidpaw-wallet.replay",
    "bidpaw-wallet.parallel",
    "bidpaw-wallet.duplicate",
    "bidpaw-wallet.blocked_player",
    "bidpaw-wallet.blocked_final",
    "bidpaw-wallet.not_enough_balance",
    "bidpaw-wallet.refused",
)
BREAKAGES: dict[str, tuple[str, ...]] = {
    "signature-not-checked": ("bidpaw-wallet.signature",),
    "signature-after-parameters": ("bidpaw-wallet.signature",),
    "get-form-refused": ("bidpaw-wallet.done",),
    "client-id-not-checked": ("bidpaw-wallet.invalid_request",),
    "unknown-session-accepted": ("bidpaw-wallet.unknown_session",),
    "duplicate-taken-for-replay": ("bidpaw-wallet.duplicate",),
    "replay-charges-again": ("bidpaw-wallet.replay", "bidpaw-wallet.parallel"),
    "replay-evaluated-afresh": REPLAY_CHECKS,
    "simultaneous-calls-each-charge": ("bidpaw-wallet.parallel",),
    "block-not-checked": ("bidpaw-wallet.blocked_player", "bidpaw-wallet.blocked_final"),
    "blocked-answer-not-kept": ("bidpaw-wallet.blocked_final",),
    "insufficient-funds-as-refused": ("bidpaw-wallet.not_enough_balance",),
    "refused-as-not-enough-balance": ("bidpaw-wallet.refused",),
}


def active(name: str) -> bool:
    return ACTIVE.get() == name


def install() -> None:
    """Wrap the service's functions; each wrapper behaves as the original unless its fault is on."""
    from partner_gateway import store
    from partner_gateway.bidpaw import wallet as endpoint
    from partner_gateway.bidpaw.signing import Pairs
    from partner_gateway.wallet import transactions
    from partner_gateway.wallet.client import Kind, Outcome

    def wrap(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        setattr(owner, name, make(getattr(owner, name)))

    # signature-not-checked: only a repeated sign is still refused.
    def no_signature(original: Any) -> Any:
        def check(request: Any, received: Any, settings: Any) -> None:
            if not active("signature-not-checked"):
                original(request, received, settings)

        return check

    wrap(endpoint, "_check_signature", no_signature)

    # signature-after-parameters: the parameters are checked before the signature.
    def parameters_first(original: Any) -> Any:
        async def handle(request: Any, clock: Any) -> Any:
            if active("signature-after-parameters"):
                received = await endpoint._received(request)
                endpoint._check_parameters(received, request.app.state.settings, get=request.method != "POST")
            return await original(request, clock)

        return handle

    wrap(endpoint, "_handle", parameters_first)

    # get-form-refused: an amount in a query string is never read.
    def get_amount(original: Any) -> Any:
        def amount(value: Any, *, get: bool, largest: int) -> int:
            if get and active("get-form-refused"):
                raise endpoint.Refused(transactions.Code.INVALID_REQUEST, "fault: amount")
            result: int = original(value, get=get, largest=largest)
            return result

        return amount

    wrap(endpoint, "_amount", get_amount)

    # client-id-not-checked: clientId and gameId taken as ours, whatever they are.
    def any_client(original: Any) -> Any:
        def check(received: Any, settings: Any, *, get: bool) -> Any:
            if active("client-id-not-checked"):
                pairs = Pairs(
                    (name, settings.bidpaw_client_id if name == "clientId" else value)
                    for name, value in received.pairs
                )
                pairs = Pairs(
                    (name, settings.bidpaw_game_id if name == "gameId" else value) for name, value in pairs
                )
                received = dataclasses.replace(received, pairs=pairs)
            return original(received, settings, get=get)

        return check

    wrap(endpoint, "_check_parameters", any_client)

    # unknown-session-accepted: a session not found counts as one without a currency.
    def any_session(original: Any) -> Any:
        async def touch(conn: Any, **kwargs: Any) -> Any:
            found = await original(conn, **kwargs)
            return [None] if found is None and active("unknown-session-accepted") else found

        return touch

    wrap(store, "touch_bidpaw_session", any_session)

    # block-not-checked: nobody is blocked for the wallet.
    def never_blocked(original: Any) -> Any:
        async def lock(conn: Any, **kwargs: Any) -> Any:
            blocked = await original(conn, **kwargs)
            return False if active("block-not-checked") else blocked

        return lock

    wrap(store, "lock_player", never_blocked)

    # duplicate-taken-for-replay: the fingerprint is the transactionId alone.
    # replay-evaluated-afresh: the fingerprint changes with every call, so a replay is a duplicate.
    def fingerprint(original: Any) -> Any:
        def of(self: Any) -> bytes:
            if active("duplicate-taken-for-replay"):
                return str(self.transaction_id).encode()
            if active("replay-evaluated-afresh"):
                import secrets

                return secrets.token_bytes(32)
            result: bytes = original(self)
            return result

        return of

    wrap(transactions.Callback, "fingerprint", fingerprint)

    # replay-charges-again: a replay of a done transaction moves the money again, under a new
    # operation (the first answer is still sent, byte for byte).
    done: set[str] = set()

    def charge_again(original: Any) -> Any:
        async def process(database: Any, wallet: Any, callback: Any, *, clock: Any) -> Any:
            answered = await original(database, wallet, callback, clock=clock)
            if active("replay-charges-again") and answered.code == transactions.Code.DONE:
                if callback.transaction_id in done:
                    kind = Kind.DEBIT if callback.method == "charge" else Kind.CREDIT
                    again = dataclasses.replace(
                        callback.movement(), transaction_id=callback.transaction_id + "-2"
                    )
                    await wallet.call(kind, again)
                done.add(callback.transaction_id)
            return answered

        return process

    wrap(endpoint, "process", charge_again)

    # simultaneous-calls-each-charge: a call that arrives while another with its transactionId is
    # in flight moves the money too, under an operation of its own (no lock on the transactionId).
    in_flight: dict[str, int] = {}

    def no_lock(original: Any) -> Any:
        async def process(database: Any, wallet: Any, callback: Any, *, clock: Any) -> Any:
            if not active("simultaneous-calls-each-charge"):
                return await original(database, wallet, callback, clock=clock)
            others = in_flight.get(callback.transaction_id, 0)
            in_flight[callback.transaction_id] = others + 1
            try:
                answered = await original(database, wallet, callback, clock=clock)
                if others:
                    kind = Kind.DEBIT if callback.method == "charge" else Kind.CREDIT
                    own = f"{callback.transaction_id}-{others}"
                    await wallet.call(kind, dataclasses.replace(callback.movement(), transaction_id=own))
                return answered
            finally:
                in_flight[callback.transaction_id] -= 1

        return process

    wrap(endpoint, "process", no_lock)

    # blocked-answer-not-kept: a transactionId answered 2 is evaluated afresh when it comes again.
    answered_2: set[str] = set()

    def forget_blocked(original: Any) -> Any:
        async def process(database: Any, wallet: Any, callback: Any, *, clock: Any) -> Any:
            if active("blocked-answer-not-kept") and callback.transaction_id in answered_2:
                callback = dataclasses.replace(callback, transaction_id=callback.transaction_id + "-afresh")
            answered = await original(database, wallet, callback, clock=clock)
            if active("blocked-answer-not-kept") and answered.code == transactions.Code.PLAYER_BLOCKED:
                answered_2.add(callback.transaction_id)
            return answered

        return process

    wrap(endpoint, "process", forget_blocked)

    # insufficient-funds-as-refused / refused-as-not-enough-balance: a wallet answer mapped to
    # the wrong code.
    swapped = {
        ("insufficient-funds-as-refused", Outcome.INSUFFICIENT_FUNDS): transactions.Code.REFUSED_BY_WALLET,
        ("refused-as-not-enough-balance", Outcome.REFUSED): transactions.Code.NOT_ENOUGH_BALANCE,
    }

    def wrong_code(original: Any) -> Any:
        def step(method: str, outcome: Any) -> Any:
            right = original(method, outcome)
            code = swapped.get((ACTIVE.get() or "", outcome))
            return dataclasses.replace(right, answer=code) if code is not None else right

        return step

    wrap(transactions, "step_for", wrong_code)


class FaultSwitch:
    """Sets ACTIVE from the request's X-Certify-Fault header for the request's lifetime."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fault = next((v.decode() for k, v in scope["headers"] if k == FAULT_HEADER), None)
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != FAULT_HEADER]}
        token = ACTIVE.set(fault)
        try:
            await self.app(scope, receive, send)
        finally:
            ACTIVE.reset(token)


def main(port: int) -> None:
    import uvicorn

    from partner_gateway.app import create_app
    from partner_gateway.config import load_settings
    from partner_gateway.logs import setup_logging

    settings, _ = load_settings()
    setup_logging(settings)
    install()
    uvicorn.run(
        FaultSwitch(create_app(settings)), host="127.0.0.1", port=port, log_config=None, access_log=False
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))

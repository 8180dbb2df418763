"""BidPaw's wallet callbacks, played as BidPaw plays them (`certify --bidpaw-wallet`).

Each check opens a BidPaw session through the gateway's route (`GET /bidpaw/open-session`, whose
iframe URL's `session` value is the callbacks' `sessionId`), then sends `POST /bidpaw/wallet`
callbacks signed as BidPaw's sample signs them: HMAC-SHA256 of the parameter object as
`JSON.stringify` spells it, keyed with the callback secret. Signing is done here, not borrowed
from the service, so a signing bug on the service's side cannot hide behind a shared one.

Every transactionId is new (`certify-<random>-<what>`), so a run can be repeated against the same
deployment. Amounts are one cent, and what a check charges it credits back (and the other way
round), so the test player's balance ends where it started.

With `--wallet-sandbox-url` (the sandbox wallet's admin API, `partner-gateway wallet-sandbox`), the
checks also read the wallet's ledger: how many times the wallet was asked for a transaction and
what its balance did. Codes 1 (Not Enough Balance) and 7 (Refused by the wallet) need it: the
player's balance is lowered, or the wallet told to refuse, for one callback, then put back.
Without it those two checks are skipped with a line that says so. Code 7 switches the sandbox
wallet's `refuse_rate` for the whole wallet for about one callback: run it against a sandbox
wallet no one else is using at that moment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from partner_gateway.certify.client import BidpawWallet, Deployment, Failed, Skipped, describe, json_or_none
from partner_gateway.certify.expectations import Check, Stats, percentiles

CALLBACK_PATH = "/bidpaw/wallet"
OPEN_SESSION_PATH = "/bidpaw/open-session"
AMOUNT = 1  # cents
PARALLEL_CALLBACKS = 8
DESCRIPTIONS = {
    0: "",
    1: "Not Enough Balance",
    2: "Player blocked",
    3: "Unknown session",
    4: "Invalid request",
    5: "Duplicate transaction",
    6: "Invalid signature",
    7: "Refused by the wallet",
}
NO_SANDBOX = "--wallet-sandbox-url not given: {what} not checked (it needs the sandbox wallet's admin API)"


def sign(params: dict[str, Any], secret: str) -> str:
    """BidPaw's `sign`: HMAC-SHA256 of `JSON.stringify(params)` (ASCII-safe values, as certify sends)."""
    message = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def expect_code(response: httpx.Response, code: int, what: str) -> None:
    """Exactly `200 application/json {"errorCode": code, "errorDescription": <the table's>}`."""
    wanted = {"errorCode": code, "errorDescription": DESCRIPTIONS[code]}
    if (
        response.status_code != 200
        or not response.headers.get("content-type", "").startswith("application/json")
        or json_or_none(response) != wanted
    ):
        raise Failed(f"{what}: 200 {json.dumps(wanted)}", describe(response))


class SandboxWallet:
    """The sandbox wallet's admin API (`/_sandbox/...`, not signed)."""

    def __init__(self, d: Deployment, url: str, currency: str) -> None:
        self.d, self.url, self.currency = d, url.rstrip("/"), currency

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.d.request(method, self.url + path, **kwargs)
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise Failed(f"the sandbox wallet: {method} {path}: 200 JSON", describe(response))
        return body

    def _balance_path(self) -> str:
        return f"/_sandbox/balance/{quote(self.d.player, safe='')}?currency={self.currency}"

    async def balance(self) -> int:
        return int((await self._json("GET", self._balance_path()))["balance"])

    async def set_balance(self, balance: int) -> None:
        await self._json("PUT", self._balance_path(), json={"balance": balance})

    async def operations(self, transaction_id: str) -> list[dict[str, Any]]:
        """The wallet operations for BidPaw's transactionId: one per time the wallet was asked anew."""
        ledger = await self._json("GET", "/_sandbox/ledger")
        return [op for op in ledger["operations"] if op.get("partnerTransactionId") == transaction_id]

    async def expect_operations(self, transaction_id: str, wanted: list[tuple[str, str]], what: str) -> None:
        """The (kind, state) of each wallet operation for the transaction, in order."""
        found = [(op["kind"], op["state"]) for op in await self.operations(transaction_id)]
        if found != wanted:
            raise Failed(f"{what}: the wallet's operations {wanted}", f"{found}")

    async def expect_balance(self, balance: int, what: str) -> None:
        found = await self.balance()
        if found != balance:
            raise Failed(f"{what}: the wallet's balance {balance}", f"{found}")

    async def faults(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/_sandbox/faults"))

    async def set_faults(self, faults: dict[str, Any]) -> None:
        await self._json("PUT", "/_sandbox/faults", json=faults)


@dataclass
class BidPaw:
    """BidPaw's side of one check: a session of the test player, and signed callbacks for it."""

    d: Deployment
    target: BidpawWallet
    session: str
    run: str  # this check's part of every transactionId

    def transaction_id(self, what: str) -> str:
        return f"certify-{self.run}-{what}-{secrets.token_hex(4)}"

    def params(self, method: str = "charge", what: str = "tx", **overrides: Any) -> dict[str, Any]:
        """BidPaw's eight parameters in its order; an override of None leaves the parameter out."""
        values: dict[str, Any] = {
            "method": method,
            "userId": self.d.player,
            "clientId": self.target.client_id,
            "gameId": self.target.game_id,
            "sessionId": self.session,
            "amount": AMOUNT,
            "currency": self.target.currency,
            "transactionId": self.transaction_id(what),
        }
        values.update(overrides)
        return {name: value for name, value in values.items() if value is not None}

    def sign(self, params: dict[str, Any]) -> str:
        return sign(params, self.target.callback_secret)

    async def post(
        self, params: dict[str, Any], *, signs: list[str] | None = None, body: bytes | None = None
    ) -> httpx.Response:
        """A callback as BidPaw sends it: the JSON body and its `sign` (or the `signs` given)."""
        content = body if body is not None else json.dumps(params, ensure_ascii=False).encode()
        sent = [self.sign(params)] if signs is None else signs
        headers = [("Content-Type", "application/json"), *(("sign", value) for value in sent)]
        return await self.d.request("POST", CALLBACK_PATH, headers=headers, content=content)

    async def get(self, params: dict[str, Any]) -> httpx.Response:
        """The same callback in a query string: every value a string, signed as a string."""
        strings = {name: str(value) for name, value in params.items()}
        return await self.d.request(
            "GET", CALLBACK_PATH, headers={"sign": self.sign(strings)}, params=strings
        )

    async def expect(self, params: dict[str, Any], code: int, what: str, **kwargs: Any) -> httpx.Response:
        response = await self.post(params, **kwargs)
        expect_code(response, code, what)
        return response

    async def put_back(self, params: dict[str, Any]) -> None:
        """The opposite of a callback answered 0, so the player's balance ends where it started."""
        method = "credit" if params["method"] == "charge" else "charge"
        await self.expect(self.params(method, "put-back"), 0, f"a {method} putting back a {params['method']}")

    def sandbox(self) -> SandboxWallet | None:
        url = self.target.sandbox_url
        return SandboxWallet(self.d, url, self.target.currency) if url else None


async def open_session(d: Deployment) -> BidPaw:
    """A BidPaw session for the test player, opened as the casino does: through the gateway."""
    target = d.options.bidpaw_wallet
    if target is None:
        raise Skipped("--bidpaw-wallet not given")
    d.secrets.add(target.callback_secret)
    headers = {**d.gateway(user=d.player), "X-User-Currency": target.currency}
    response = await d.request("GET", OPEN_SESSION_PATH, headers=headers, params={"nick": "Certify"})
    body = json_or_none(response)
    url = body.get("iframeURL") if isinstance(body, dict) else None
    if response.status_code != 200 or not isinstance(url, str):
        raise Failed("GET /bidpaw/open-session: 200 with an iframeURL", describe(response))
    sessions = parse_qs(urlsplit(url).query).get("session", [])
    if len(sessions) != 1 or not sessions[0]:
        raise Failed(
            "an iframeURL with one session parameter (the callbacks' sessionId): is BIDPAW_API_URL "
            "the bidpaw-sandbox?",
            f"{len(sessions)} session parameters",
        )
    d.secrets.add(sessions[0])
    return BidPaw(d, target, sessions[0], run=secrets.token_hex(4))


@asynccontextmanager
async def player_blocked(d: Deployment) -> AsyncIterator[None]:
    """The test player blocked for the block's duration; unblocked whatever happens."""
    response = await d.block()
    if response.status_code != 204:
        raise Failed(f"PUT {d.block_path()}: 204", describe(response))
    try:
        yield
    finally:
        unblocked = await d.block(blocked=False)
        if unblocked.status_code != 204:
            raise Failed(f"DELETE {d.block_path()}: 204", describe(unblocked))


# --- the checks -----------------------------------------------------------------------------


async def done(d: Deployment) -> None:
    bp = await open_session(d)
    wallet = bp.sandbox()
    before = await wallet.balance() if wallet else 0
    charge = bp.params("charge", "done")
    await bp.expect(charge, 0, "a charge")
    if wallet:
        await wallet.expect_operations(charge["transactionId"], [("debit", "applied")], "a charge")
        await wallet.expect_balance(before - AMOUNT, "after a charge of 1 cent")
    credit = bp.params("credit", "done-get")
    expect_code(await bp.get(credit), 0, "a credit over GET (every value a string)")
    if wallet:
        await wallet.expect_operations(credit["transactionId"], [("credit", "applied")], "a credit")
        await wallet.expect_balance(before, "after the credit of 1 cent")


async def signature(d: Deployment) -> None:
    bp = await open_session(d)
    params = bp.params("charge", "signature")
    right = bp.sign(params)
    probes: list[tuple[str, dict[str, Any]]] = [
        ("no sign", {"signs": []}),
        ("sign keyed with another secret", {"signs": [sign(params, "certify-not-the-secret")]}),
        ("the sign of other parameters (amount 2)", {"signs": [bp.sign({**params, "amount": 2})]}),
        ("sign in upper-case hex", {"signs": [right.upper()]}),
        ("sign sent twice", {"signs": [right, right]}),
    ]
    for probe, kwargs in probes:
        await bp.expect(params, 6, probe, **kwargs)
    tampered = json.dumps({**params, "amount": 2}).encode()
    await bp.expect(params, 6, "the body changed after signing (amount 2)", body=tampered)
    bad = {**params, "amount": 0, "sessionId": "certify-unknown"}
    await bp.expect(bad, 6, "a wrong sign over bad parameters (decided first)", signs=["0" * 64])
    await bp.expect(params, 0, "the same transactionId, signed (a 6 keeps nothing)")
    await bp.put_back(params)


async def invalid_request(d: Deployment) -> None:
    bp = await open_session(d)
    params = bp.params("charge", "invalid")
    other = "USD" if bp.target.currency != "USD" else "EUR"
    probes: list[tuple[str, dict[str, Any]]] = [
        ("another clientId", {"clientId": "certify-not-ours"}),
        ("another gameId", {"gameId": "certify-not-ours"}),
        ("amount 0", {"amount": 0}),
        ('amount "1" (a string in JSON)', {"amount": "1"}),
        ("method refund", {"method": "refund"}),
        ("currency missing", {"currency": None}),
        ("a currency BidPaw does not list (XXX)", {"currency": "XXX"}),
        (f"currency {other}, not the session's", {"currency": other}),
    ]
    for probe, overrides in probes:
        await bp.expect(_with(params, overrides), 4, probe)
    await bp.expect(params, 0, "the same transactionId, corrected (a 4 keeps nothing)")
    await bp.put_back(params)


def _with(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`params` with `overrides` (None: the parameter left out)."""
    return {name: value for name, value in {**params, **overrides}.items() if value is not None}


async def unknown_session(d: Deployment) -> None:
    bp = await open_session(d)
    params = bp.params("charge", "session")
    await bp.expect({**params, "sessionId": f"certify-{secrets.token_hex(8)}"}, 3, "a sessionId never opened")
    stranger = {**params, "userId": f"{d.player}-stranger"}
    await bp.expect(stranger, 3, "the session's id with another player's userId")
    wallet = bp.sandbox()
    if wallet:
        await wallet.expect_operations(params["transactionId"], [], "after answers 3")
    await bp.expect(params, 0, "the same transactionId with the player's session (a 3 keeps nothing)")
    await bp.put_back(params)


async def duplicate(d: Deployment) -> None:
    bp = await open_session(d)
    wallet = bp.sandbox()
    params = bp.params("charge", "duplicate")
    first = await bp.expect(params, 0, "a charge")
    before = await wallet.balance() if wallet else 0
    probes: list[tuple[str, dict[str, Any]]] = [
        ("the same transactionId with amount 2", {"amount": 2}),
        ("the same transactionId as a credit", {"method": "credit"}),
        ("the same transactionId with another sessionId", {"sessionId": f"certify-{secrets.token_hex(8)}"}),
    ]
    for probe, overrides in probes:
        await bp.expect({**params, **overrides}, 5, probe)
    if wallet:
        await wallet.expect_operations(params["transactionId"], [("debit", "applied")], "after answers 5")
        await wallet.expect_balance(before, "after answers 5")
    again = await bp.post(params)
    if again.content != first.content:
        raise Failed("the first call again after the duplicates: its first answer", describe(again))
    await bp.put_back(params)


async def replay(d: Deployment) -> None:
    bp = await open_session(d)
    wallet = bp.sandbox()
    before = await wallet.balance() if wallet else 0
    params = bp.params("charge", "replay")
    first = await bp.expect(params, 0, "a charge")
    for attempt in (1, 2):
        again = await bp.post(params)
        if (again.status_code, again.headers.get("content-type"), again.content) != (
            first.status_code,
            first.headers.get("content-type"),
            first.content,
        ):
            raise Failed(f"replay {attempt}: the first answer, byte for byte", describe(again))
    if wallet:
        await wallet.expect_operations(params["transactionId"], [("debit", "applied")], "after two replays")
        await wallet.expect_balance(before - AMOUNT, "after a charge and two replays")
    await bp.put_back(params)


async def parallel(d: Deployment) -> Stats:
    bp = await open_session(d)
    wallet = bp.sandbox()
    before = await wallet.balance() if wallet else 0
    params = bp.params("charge", "parallel")
    async with httpx.AsyncClient(
        base_url=d.http.base_url,
        headers=d.http.headers,
        timeout=d.http.timeout,
        limits=httpx.Limits(max_connections=PARALLEL_CALLBACKS),
    ) as http:  # a connection each, whatever the run's pool allows
        at_once = BidPaw(dataclasses.replace(d, http=http), bp.target, bp.session, bp.run)
        answers = await at_once.d.concurrently(at_once.post(params) for _ in range(PARALLEL_CALLBACKS))
        stats = percentiles(at_once.d.latencies)
    done = {"errorCode": 0, "errorDescription": ""}
    if not any(json_or_none(answer) == done for answer in answers):
        raise Failed(
            f"{PARALLEL_CALLBACKS} simultaneous identical charges: at least one 0", describe(answers[0])
        )
    for answer in answers:
        if json_or_none(answer) != {"errorCode": 9, "errorDescription": "In progress, retry"}:
            expect_code(answer, 0, f"{PARALLEL_CALLBACKS} simultaneous identical charges: 0 (or 9, retry)")
    await bp.expect(params, 0, "that charge again, once all have answered")
    if wallet:
        await wallet.expect_operations(
            params["transactionId"], [("debit", "applied")], "simultaneous charges"
        )
        await wallet.expect_balance(before - AMOUNT, f"after {PARALLEL_CALLBACKS} simultaneous charges")
    await bp.put_back(params)
    return stats


async def blocked_player(d: Deployment) -> None:
    bp = await open_session(d)  # before the block: a blocked player gets no session
    wallet = bp.sandbox()
    charge, credit = bp.params("charge", "blocked"), bp.params("credit", "blocked")
    async with player_blocked(d):
        await bp.expect(charge, 2, "a charge for a blocked player")
        await bp.expect(credit, 0, "a credit for a blocked player (credits still reach them)")
        await bp.expect(charge, 2, "that charge again")
    if wallet:
        await wallet.expect_operations(charge["transactionId"], [], "a charge answered 2")
        await wallet.expect_operations(credit["transactionId"], [("credit", "applied")], "the credit")
    await bp.put_back(credit)


async def blocked_final(d: Deployment) -> None:
    bp = await open_session(d)
    wallet = bp.sandbox()
    charge = bp.params("charge", "blocked-final")
    async with player_blocked(d):
        await bp.expect(charge, 2, "a charge for a blocked player")
    again = await bp.post(charge)
    if json_or_none(again) == {"errorCode": 0, "errorDescription": ""}:
        await bp.put_back(charge)  # it was charged: the player's balance back where it was
    expect_code(again, 2, "that charge again after the unblock (2 belongs to the transaction)")
    if wallet:
        await wallet.expect_operations(charge["transactionId"], [], "a charge answered 2")


async def not_enough_balance(d: Deployment) -> None:
    bp = await open_session(d)
    wallet = bp.sandbox()
    if wallet is None:
        raise Skipped(NO_SANDBOX.format(what="code 1 (Not Enough Balance)"))
    params = bp.params("charge", "balance")
    before = await wallet.balance()
    await wallet.set_balance(AMOUNT - 1)
    try:
        await bp.expect(params, 1, "a charge over the balance")
    finally:
        await wallet.set_balance(before)
    await bp.expect(params, 1, "that charge again, the balance back (the answer belongs to it)")
    await wallet.expect_operations(params["transactionId"], [("debit", "insufficient_funds")], "code 1")


async def refused(d: Deployment) -> None:
    bp = await open_session(d)
    wallet = bp.sandbox()
    if wallet is None:
        raise Skipped(NO_SANDBOX.format(what="code 7 (Refused by the wallet)"))
    params = bp.params("charge", "refused")
    saved = await wallet.faults()
    await wallet.set_faults({**saved, "refuse_rate": 1.0})
    try:
        await bp.expect(params, 7, "a charge the wallet refuses")
    finally:
        await wallet.set_faults(saved)
    await bp.expect(params, 7, "that charge again, the wallet willing (the answer belongs to it)")
    await wallet.expect_operations(params["transactionId"], [("debit", "refused")], "code 7")


def _check(name: str, title: str, run: Callable[[Deployment], Awaitable[Stats | None]]) -> Check:
    return Check(f"bidpaw-wallet.{name}", title, run)


WALLET_CHECKS: tuple[Check, ...] = (
    _check("done", "a charge and a credit (POST and GET) are answered 0 and move the money once", done),
    _check(
        "signature",
        "sign missing, wrong, of other data, upper-case or twice is 6, decided before anything else",
        signature,
    ),
    _check(
        "invalid_request",
        "clientId, gameId, amount, method or currency wrong or missing is 4; nothing is kept",
        invalid_request,
    ),
    _check("unknown_session", "a sessionId not opened for the player is 3; nothing is kept", unknown_session),
    _check("duplicate", "a used transactionId with other data is 5; the first answer stands", duplicate),
    _check("replay", "a replay gets the first answer byte for byte; the wallet is asked once", replay),
    _check(
        "parallel",
        f"{PARALLEL_CALLBACKS} simultaneous identical charges: each 0 (or 9), the wallet asked once",
        parallel,
    ),
    _check(
        "blocked_player",
        "a blocked player's charge is 2 and its replay too, a credit still 0; unblocked after",
        blocked_player,
    ),
    _check(
        "blocked_final",
        "a charge answered 2 is answered 2 for ever: its replay after the unblock too, nothing charged",
        blocked_final,
    ),
    _check(
        "not_enough_balance",
        "a charge over the balance is 1 (for ever); needs --wallet-sandbox-url",
        not_enough_balance,
    ),
    _check("refused", "a charge the wallet refuses is 7 (for ever); needs --wallet-sandbox-url", refused),
)

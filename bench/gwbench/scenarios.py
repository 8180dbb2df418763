"""The scenarios and the targets: what is loaded, with which requests, and what must hold.

A scenario is a wrk Lua script (gwbench/lua/) and its arguments. Most use pool.lua, which
cycles through requests written to a file beforehand (one line each: method, path, body,
headers), so anything Python can prepare (signed bodies, tokens fetched from the service) needs
no Lua. Adding one: a function that returns its request lines, a `Scenario` in SCENARIOS, and
(if it has one) a target in TARGETS; a new kind of server is a launcher in run.py's SERVERS.
"""

from __future__ import annotations

import inspect
import json
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gwbench.servers import OPERATOR_ID, PLAYERS, BenchError, Keys

GAME_ID = "bench-game"
EXCHANGES = 128  # launch tokens exchanged beforehand: the replay keys and the introspected tokens
WALLET_PLAYERS = 64  # players with a BidPaw session record, charged in turn by the wallet scenario
WALLET_CURRENCY = "EUR"
ONCE_PER_SECOND = 12000  # requests prepared per second of a once.lua run: 3x the fastest seen (3,939 rps)


class Context:
    """What scenarios draw on: the keys, a work directory, the service under load (its URL)."""

    def __init__(self, keys: Keys, workdir: Path, seconds: float = 5.0) -> None:
        self.keys, self.workdir, self.seconds = keys, workdir, seconds
        self.service_url = ""
        self._files: dict[str, Path] = {}
        self._runs = 0
        self.exchanged: list[tuple[str, str, dict[str, str]]] = []  # (key, body, answer)
        self.bidpaw_sessions: list[tuple[str, str]] = []  # (userId, sessionId) of open-session
        self.wallet_checked: set[str] = set()  # the service URLs that answered a callback with 0

    def requests_file(self, name: str, make: Callable[[Context], list[str]]) -> Path:
        if name not in self._files:
            path = self.workdir / f"{name}.requests"
            path.write_text("\n".join(make(self)) + "\n")
            self._files[name] = path
        return self._files[name]

    def fresh_file(self, name: str, make: Callable[[Context], list[str]]) -> Path:
        """A new file of requests at every call: for requests that may be sent only once."""
        self._runs += 1
        path = self.workdir / f"{name}-{self._runs}.requests"
        path.write_text("\n".join(make(self)) + "\n")
        return path


Args = Callable[[Context], list[str]]


def line(method: str, path: str, body: str = "", **headers: str) -> str:
    """One request for pool.lua. Header names: `_` is written `-`."""
    return "\t".join([method, path, body, *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())])


def pool(name: str, make: Callable[[Context], list[str]]) -> Args:
    return lambda ctx: [str(ctx.requests_file(name, make))]


def once(name: str, make: Callable[[Context], list[str]], expect: str) -> Args:
    """once.lua's arguments: requests prepared afresh for each run, and the text of a good answer."""
    return lambda ctx: [str(ctx.fresh_file(name, make)), expect]


def gateway(method: str, path: str) -> Callable[[Context], list[str]]:
    """The casino gateway's call for 4,000 random players."""

    def make(ctx: Context) -> list[str]:
        auth = f"Bearer {ctx.keys.gateway}"
        return [
            line(method, path, Authorization=auth, X_User_Id=f"player-{random.randint(1, PLAYERS)}")
            for _ in range(4000)
        ]

    return make


def pair_args(ctx: Context) -> list[str]:
    return [ctx.keys.gateway, ctx.keys.betlink, OPERATOR_ID, str(PLAYERS)]


def exchange(ctx: Context) -> list[tuple[str, str, dict[str, str]]]:
    """EXCHANGES launch tokens issued and exchanged once, through the service (once per run)."""
    if not ctx.exchanged:
        with httpx.Client(base_url=ctx.service_url, timeout=10) as client:
            for i in range(EXCHANGES):
                headers = {"Authorization": f"Bearer {ctx.keys.gateway}", "X-User-Id": f"player-{i + 1}"}
                launched = client.post("/betlink/session", headers=headers).json()
                key = str(uuid.uuid4())
                body = json.dumps(
                    {
                        "requestId": str(uuid.uuid4()),
                        "userId": launched["userId"],
                        "operatorId": OPERATOR_ID,
                        "launchToken": launched["launchToken"],
                        "authRequestedTimestamp": str(int(time.time() * 1000)),
                    },
                    separators=(",", ":"),
                )
                headers = {
                    "X-API-Key": ctx.keys.betlink,
                    "X-Idempotency-Key": key,
                    "Content-Type": "application/json",
                }
                answer = client.post("/betlink/authenticate", content=body, headers=headers)
                if answer.status_code != 200:
                    raise BenchError(
                        f"/betlink/authenticate answered {answer.status_code}: {answer.text[:200]}"
                    )
                ctx.exchanged.append((key, body, answer.json()))
    return ctx.exchanged


def replays(ctx: Context) -> list[str]:
    """Authenticate requests already answered: every one is a same-key replay."""
    return [
        line(
            "POST",
            "/betlink/authenticate",
            body,
            X_API_Key=ctx.keys.betlink,
            X_Idempotency_Key=key,
            Content_Type="application/json",
        )
        for key, body, _ in exchange(ctx)
    ]


def introspections(ctx: Context) -> list[str]:
    auth = f"Bearer {ctx.keys.gateway}"
    return [
        line(
            "POST",
            "/betlink/sessions/introspect",
            json.dumps({"operatorSessionToken": answer["operatorSessionToken"]}),
            Authorization=auth,
            Content_Type="application/json",
        )
        for _, _, answer in exchange(ctx)
    ]


def direct_calls(ctx: Context) -> list[str]:
    """BidPaw's open-session as the service sends it (same parameters, same `sign`), one per player."""
    from partner_gateway.bidpaw import signing
    from partner_gateway.bidpaw.client import OPEN_SESSION_PATH, encode_query, open_session_params

    wanted: dict[str, Any] = {"client_id": ctx.keys.bidpaw_client_id, "nick": None, "game_id": GAME_ID}
    accepted = {k: v for k, v in wanted.items() if k in inspect.signature(open_session_params).parameters}
    lines = []
    for i in range(1, 2001):
        params = open_session_params(user_id=f"player-{i}", **accepted)
        sign = signing.sign(params=params, secret=ctx.keys.bidpaw_secret)
        lines.append(
            line(
                "GET",
                f"{OPEN_SESSION_PATH}?{encode_query(params)}",
                sign=sign,
                content_type="application/json; charset=UTF-8",
            )
        )
    return lines


def once_count(ctx: Context) -> int:
    return max(2000, round(ONCE_PER_SECOND * max(1.0, ctx.seconds)))


def wallet_sessions(ctx: Context) -> list[tuple[str, str]]:
    """BidPaw session records made as the service makes them: `GET /bidpaw/open-session` through
    the service against the BidPaw sandbox (once per run: the records outlive the service); then,
    once per service started, one charge per player, which must be answered 0 (the settings are
    right, and the service's wallet client has its connection)."""
    from partner_gateway.bidpaw.endpoints import session_of

    with httpx.Client(base_url=ctx.service_url, timeout=10) as client:
        for i in range(len(ctx.bidpaw_sessions) + 1, WALLET_PLAYERS + 1):
            user = f"wallet-player-{i}"
            headers = {
                "Authorization": f"Bearer {ctx.keys.gateway}",
                "X-User-Id": user,
                "X-User-Currency": WALLET_CURRENCY,
            }
            answer = client.get("/bidpaw/open-session", headers=headers)
            session = session_of(answer.json().get("iframeURL", "")) if answer.status_code == 200 else None
            if session is None:
                raise BenchError(f"/bidpaw/open-session answered {answer.status_code}: {answer.text[:200]}")
            ctx.bidpaw_sessions.append((user, session))
        if ctx.service_url not in ctx.wallet_checked:
            for request in charges(ctx, ctx.bidpaw_sessions, WALLET_PLAYERS):
                _, path, body, sign, content_type = request.split("\t")
                headers = dict(h.split(": ", 1) for h in (sign, content_type))
                answer = client.post(path, content=body, headers=headers)
                if answer.text != '{"errorCode":0,"errorDescription":""}':
                    raise BenchError(f"/bidpaw/wallet answered {answer.status_code}: {answer.text[:200]}")
            ctx.wallet_checked.add(ctx.service_url)
    return ctx.bidpaw_sessions


def wallet_callbacks(ctx: Context) -> list[str]:
    return charges(ctx, wallet_sessions(ctx), once_count(ctx))


def charges(ctx: Context, players: list[tuple[str, str]], count: int) -> list[str]:
    """BidPaw's charge callbacks as BidPaw sends them (the eight parameters in its order, a JSON
    body, `sign` over it), 1 cent each, a fresh transactionId each, the players in turn."""
    from partner_gateway.bidpaw.signing import Pairs, callback_signatures

    lines = []
    for i in range(count):
        user, session = players[i % len(players)]
        params: dict[str, Any] = {
            "method": "charge",
            "userId": user,
            "clientId": ctx.keys.bidpaw_client_id,
            "gameId": GAME_ID,
            "sessionId": session,
            "amount": 1,
            "currency": WALLET_CURRENCY,
            "transactionId": "bench-" + uuid.uuid4().hex,
        }
        body = json.dumps(params, separators=(",", ":"))
        sign = callback_signatures(params=Pairs(params.items()), secrets=[ctx.keys.callback])[0]
        lines.append(line("POST", "/bidpaw/wallet", body, sign=sign, Content_Type="application/json"))
    return lines


def wallet_debits(ctx: Context) -> list[str]:
    """The wallet protocol's debit as the service sends it for such a charge (its body, its
    operationId as Idempotency-Key, X-Wallet-Signature with WALLET_SECRET), a fresh one each."""
    from partner_gateway.wallet import signing
    from partner_gateway.wallet.client import Kind, Movement

    lines, now = [], int(time.time())  # a signature stays good for 5 minutes: made just before the run
    for i in range(once_count(ctx)):
        movement = Movement(
            transaction_id="bench-" + uuid.uuid4().hex,
            user_id=f"wallet-player-{i % WALLET_PLAYERS + 1}",
            amount=1,
            currency=WALLET_CURRENCY,
            session_id=secrets.token_urlsafe(16),  # as long as the BidPaw sandbox's sessions
            game_id=GAME_ID,
        )
        body = movement.body(Kind.DEBIT)
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        sign = signing.signature(secret=ctx.keys.wallet, timestamp=now, body=raw.encode())
        headers = {"Idempotency_Key": body["operationId"], "X_Wallet_Signature": sign}
        lines.append(line("POST", "/debit", raw, Content_Type="application/json", **headers))
    return lines


@dataclass(frozen=True)
class Scenario:
    name: str  # the row's key (targets name it)
    title: str
    server: str  # a key of run.py's SERVERS
    args: Args
    script: str = "pool.lua"
    unit: str = "rps"
    requests: int = 1  # HTTP requests per unit
    per_connection: bool = False  # the script follows each connection (wrk -t = -c)
    split: bool = False  # each wrk thread takes its own share of the requests (once.lua)


def pair(name: str, title: str, server: str) -> Scenario:
    return Scenario(name, title, server, pair_args, "pair.lua", "pairs/s", requests=2, per_connection=True)


def get(path: str) -> Args:
    return pool(path.strip("/"), lambda ctx: [line("GET", path)])


SESSIONS, OPEN_SESSIONS = gateway("POST", "/betlink/session"), gateway("GET", "/bidpaw/open-session")
SCENARIOS = [
    Scenario("trivial", "trivial FastAPI endpoint (uvicorn)", "trivial", get("/trivial")),
    Scenario("floor-session", "floor: POST /betlink/session", "floor", pool("session", SESSIONS)),
    pair("floor-pair", "floor: session → authenticate pair", "floor"),
    Scenario(
        "bidpaw-direct", "BidPaw sandbox, called directly", "bidpaw-sandbox", pool("direct", direct_calls)
    ),
    Scenario(
        "wallet-direct",
        "wallet sandbox: POST /debit, called directly",
        "wallet-sandbox",
        once("wallet-direct", wallet_debits, '"status":"OK",'),
        "once.lua",
        split=True,
    ),
    Scenario("session", "POST /betlink/session", "service", pool("session", SESSIONS)),
    pair("pair", "session → authenticate pair, fresh keys", "service"),
    Scenario("replay", "authenticate, same-key replay", "service", pool("replay", replays)),
    Scenario(
        "introspect", "POST /betlink/sessions/introspect", "service", pool("introspect", introspections)
    ),
    Scenario("healthz", "GET /healthz (service stack, no database)", "service", get("/healthz")),
    Scenario("open-session", "GET /bidpaw/open-session → sandbox", "service", pool("open", OPEN_SESSIONS)),
    Scenario(
        "wallet",
        "POST /bidpaw/wallet (charge) → wallet sandbox",
        "service",
        once("wallet", wallet_callbacks, '"errorCode":0,'),
        "once.lua",
        split=True,
    ),
]


@dataclass(frozen=True)
class Target:
    """`share`: rate ≥ limit x `other`'s rate (same workers); `added`: p50 - `other`'s p50 ≤ limit
    ms; `tail`: the worst p99 ÷ p50 of `scenarios` ≤ limit. At `clients` connections (0: the most
    measured), at every worker count measured."""

    kind: str
    limit: float
    scenarios: tuple[str, ...]
    other: str = ""
    clients: int = 16
    name: str = ""


TAIL = ("session", "pair", "replay", "introspect", "open-session")
TARGETS = [
    Target("share", 0.70, ("session",), "floor-session", name="/betlink/session ≥ 70 % of the floor's rate"),
    Target(
        "share", 0.70, ("pair",), "floor-pair", name="session → authenticate pair ≥ 70 % of the floor's rate"
    ),
    Target(
        "added",
        1.0,
        ("open-session",),
        "bidpaw-direct",
        1,
        "BidPaw open-session p50 ≤ 1 ms over a direct call",
    ),
    Target(
        "added",
        2.0,
        ("wallet",),
        "wallet-direct",
        1,
        "BidPaw wallet callback p50 ≤ 2 ms over the wallet's own",
    ),
    Target("tail", 4.0, TAIL, clients=0, name="p99 ≤ 4x p50 (worst scenario)"),
]

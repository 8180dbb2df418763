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


class Context:
    """What scenarios draw on: the keys, a work directory, the service under load (its URL)."""

    def __init__(self, keys: Keys, workdir: Path) -> None:
        self.keys, self.workdir = keys, workdir
        self.service_url = ""
        self._files: dict[str, Path] = {}
        self.exchanged: list[tuple[str, str, dict[str, str]]] = []  # (key, body, answer)

    def requests_file(self, name: str, make: Callable[[Context], list[str]]) -> Path:
        if name not in self._files:
            path = self.workdir / f"{name}.requests"
            path.write_text("\n".join(make(self)) + "\n")
            self._files[name] = path
        return self._files[name]


Args = Callable[[Context], list[str]]


def line(method: str, path: str, body: str = "", **headers: str) -> str:
    """One request for pool.lua. Header names: `_` is written `-`."""
    return "\t".join([method, path, body, *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())])


def pool(name: str, make: Callable[[Context], list[str]]) -> Args:
    return lambda ctx: [str(ctx.requests_file(name, make))]


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
    Scenario("session", "POST /betlink/session", "service", pool("session", SESSIONS)),
    pair("pair", "session → authenticate pair, fresh keys", "service"),
    Scenario("replay", "authenticate, same-key replay", "service", pool("replay", replays)),
    Scenario(
        "introspect", "POST /betlink/sessions/introspect", "service", pool("introspect", introspections)
    ),
    Scenario("healthz", "GET /healthz (service stack, no database)", "service", get("/healthz")),
    Scenario("open-session", "GET /bidpaw/open-session → sandbox", "service", pool("open", OPEN_SESSIONS)),
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
    Target("tail", 4.0, TAIL, clients=0, name="p99 ≤ 4x p50 (worst scenario)"),
]

"""The service's own cost per request, free of this machine's noise: the instructions the app's
process executes (valgrind's cachegrind), or its CPU time, for each BetLink route, in-process.

    python3 scripts/dev.py bench-instructions [--scenarios session,introspect,replay,authenticate]
                                              [--requests 1000] [--cpu]

wrk's rates swing by a third between neighbouring runs on a shared 2-core machine; an instruction
count moves by 0.1 % (one statement) to 2.5 % (authenticate's four round trips) between runs.
Two versions of the code are compared by running this from a worktree of each. The app is driven
through ASGI in its own process (no server, no load generator), 16 requests in flight, on an
embedded PostgreSQL that is not counted.
Each scenario runs twice under cachegrind, with 300 and with 300 + N measured requests after the
same set-up and warm-up; the difference over N is the cost of one request. `--cpu` measures the
process's CPU time instead, with no valgrind (faster, noisier). Installs valgrind from Debian's
packages when missing, as the bench installs wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
SCENARIOS = ("session", "introspect", "replay", "authenticate")
BASE = 300  # measured requests of the shorter run
WARM = 200
IN_FLIGHT = 16
OPERATOR = "bench-operator"

Request = tuple[str, str, dict[str, str], bytes]


# ---- the child: one app, one scenario, driven through ASGI -------------------------------------


async def _call(app: Any, request: Request) -> tuple[int, bytes]:
    method, path, headers, body = request
    raw = [(b"host", b"bench")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": raw, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    answer: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never goes away
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["body"]


async def _started(app: Any) -> asyncio.Task[None]:
    """The app's lifespan, started and kept running (the caller holds the task)."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    return task


async def _requests(app: Any, scenario: str, count: int, keys: dict[str, str]) -> list[Request]:
    gateway = {"Authorization": f"Bearer {keys['gateway']}"}
    if scenario == "session":
        return [
            ("POST", "/betlink/session", gateway | {"X-User-Id": f"player-{random.randint(1, 10_000)}"}, b"")
            for _ in range(count)
        ]
    exchanges: list[Request] = []
    for i in range(count):
        _, body = await _call(app, ("POST", "/betlink/session", gateway | {"X-User-Id": f"p-{i}"}, b""))
        launched = json.loads(body)
        auth = {
            "requestId": str(uuid.uuid4()),
            "userId": launched["userId"],
            "operatorId": OPERATOR,
            "launchToken": launched["launchToken"],
            "authRequestedTimestamp": str(int(time.time() * 1000)),
        }
        headers = {
            "X-API-Key": keys["betlink"],
            "X-Idempotency-Key": str(uuid.uuid4()),
            "Content-Type": "application/json",
        }
        exchanges.append(("POST", "/betlink/authenticate", headers, json.dumps(auth).encode()))
    if scenario == "authenticate":
        return exchanges
    tokens = []
    for exchange in exchanges:  # answered once: a replay from now on
        _, body = await _call(app, exchange)
        tokens.append(json.loads(body)["operatorSessionToken"])
    if scenario == "replay":
        return exchanges
    json_gateway = gateway | {"Content-Type": "application/json"}
    return [
        (
            "POST",
            "/betlink/sessions/introspect",
            json_gateway,
            json.dumps({"operatorSessionToken": t}).encode(),
        )
        for t in tokens
    ]


async def _drive(scenario: str, measured: int, prepared: int, keys: dict[str, str]) -> dict[str, float]:
    from partner_gateway.app import create_app
    from partner_gateway.config import Settings
    from partner_gateway.logs import setup_logging

    random.seed(1)
    settings = Settings()
    setup_logging(settings)
    app = create_app(settings)
    lifespan = await _started(app)
    requests = await _requests(app, scenario, prepared, keys)
    for request in requests[:WARM]:
        status, body = await _call(app, request)
        assert status < 300, (status, body[:300])
    todo = iter(requests[WARM : WARM + measured])
    statuses: dict[int, int] = {}

    async def worker() -> None:
        for request in todo:
            status, _ = await _call(app, request)
            statuses[status] = statuses.get(status, 0) + 1

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    cpu = time.process_time() - cpu
    if set(statuses) - {200, 201}:
        raise SystemExit(f"unexpected answers: {statuses}")
    lifespan.cancel()
    return {"cpu_ms": cpu / measured * 1000}


def child(argv: list[str]) -> None:
    scenario, measured, prepared = argv[0], int(argv[1]), int(argv[2])
    keys = json.loads(os.environ.pop("BENCH_KEYS"))
    figures = asyncio.run(_drive(scenario, measured, prepared, keys))
    print("INSTRUCTIONS-CHILD " + json.dumps(figures), file=sys.stderr, flush=True)
    os._exit(0)  # the lifespan's connections go with the process


# ---- the parent: PostgreSQL, the runs and the arithmetic ---------------------------------------


def _run(
    scenario: str, measured: int, prepared: int, env: dict[str, str], *, valgrind: bool
) -> tuple[float, int]:
    """(CPU ms per request, instructions of the whole process or 0)."""
    command = [sys.executable, __file__, "--child", scenario, str(measured), str(prepared)]
    if valgrind:
        command = [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            *command,
        ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
    figures = re.search(r"INSTRUCTIONS-CHILD (\{.*\})", done.stderr)
    if done.returncode != 0 or figures is None:
        raise SystemExit(f"{scenario}: the run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    refs = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    return json.loads(figures.group(1))["cpu_ms"], int(refs.group(1).replace(",", "")) if refs else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child(argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per scenario (N)")
    parser.add_argument("--cpu", action="store_true", help="CPU time only, no valgrind")
    args = parser.parse_args(argv)
    chosen = args.scenarios.split(",")
    if unknown := set(chosen) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    sys.path.insert(0, str(BENCH_DIR))
    from gwbench import debian, servers

    if not args.cpu:
        debian.ensure("valgrind", tool="bench-instructions")

    keys = servers.Keys.generate()
    with tempfile.TemporaryDirectory(prefix="gwbench-instructions-") as temp:
        with servers.embedded_postgres(Path(temp) / "data") as pg:
            env = servers.clean_environ() | {
                "DATABASE_URL": pg.url,
                "DATA_DIR": str(Path(temp) / "service-data"),
                "GATEWAY_API_KEYS": keys.gateway,
                "BETLINK_API_KEYS": keys.betlink,
                "DATA_ENCRYPTION_KEY": keys.encryption,
                "BETLINK_OPERATOR_ID": OPERATOR,
                "BETLINK_REDIRECT_URL": "https://casino.example/",
                "BETLINK_LAUNCH_TOKEN_TTL_SECONDS": "3600",
                "PYTHONHASHSEED": "0",  # the same dict and set layouts in every run
                "BENCH_KEYS": json.dumps({"gateway": keys.gateway, "betlink": keys.betlink}),
            }
            # The two valgrind runs set up the same requests and measure BASE or BASE + N of them.
            prepared = WARM + args.requests + (0 if args.cpu else BASE)
            print(f"{'scenario':14} {'instructions/request':>21} {'CPU ms/request':>15}", flush=True)
            for scenario in chosen:
                if args.cpu:
                    cpu, _ = _run(scenario, args.requests, prepared, env, valgrind=False)
                    print(f"{scenario:14} {'':>21} {cpu:15.3f}", flush=True)
                    continue
                _, short = _run(scenario, BASE, prepared, env, valgrind=True)
                cpu, long = _run(scenario, BASE + args.requests, prepared, env, valgrind=True)
                per_request = (long - short) / args.requests
                print(f"{scenario:14} {per_request:21,.0f} {'(valgrind)':>15}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

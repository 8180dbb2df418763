"""A small HTTP/1.1 load generator: gwbench's fallback when wrk is not installed.

    python pyload.py SPEC.json      (prints one JSON object on stdout)

Standard library only (uvloop when importable), keep-alive connections, one coroutine per
connection, the same scenarios and data files as the wrk scripts in lua/. A Python generator
needs several times the CPU of wrk for the same load, and on a small machine that CPU is taken
from the service: the report shows its share.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Request = bytes


def _format(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Request:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, request: Request) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        body = await self._chunked() if chunked else await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        body = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await self.reader.readexactly(size + 2)
            if size == 0:
                return bytes(body[:-2])
            del body[-2:]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Record:
    samples: dict[str, list[int]] = field(default_factory=dict)  # kind -> microseconds
    statuses: dict[str, int] = field(default_factory=dict)  # "kind:status" -> count
    errors: int = 0

    def add(self, kind: str, micros: int, status: int) -> None:
        self.samples.setdefault(kind, []).append(micros)
        key = f"{kind}:{status}"
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if status >= 400:
            self.errors += 1


def _pool(build: Callable[[], Request], size: int = 4000) -> list[Request]:
    return [build() for _ in range(size)]


def _lines(path: str) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as file:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in file if line.strip()]  # type: ignore[misc]


def request_pool(spec: dict[str, Any]) -> list[Request]:
    """The requests a single-request scenario cycles through (as the Lua scripts build them)."""
    scenario, users = spec["scenario"], int(spec.get("users", 1))
    gateway = {"Authorization": f"Bearer {spec.get('gateway_key', '')}"}
    if scenario == "get":
        return [_format("GET", spec["path"], {})]
    if scenario == "session":
        return _pool(
            lambda: _format(
                "POST", "/betlink/session", {**gateway, "X-User-Id": f"player-{random.randint(1, users)}"}
            )
        )
    if scenario == "proxy":
        return _pool(
            lambda: _format(
                "GET", "/bidpaw/open-session", {**gateway, "X-User-Id": f"player-{random.randint(1, users)}"}
            )
        )
    if scenario == "direct":
        headers = {"content-type": "application/json; charset=UTF-8"}
        return [_format("GET", path, {**headers, "sign": sign}) for path, sign in _lines(spec["data_file"])]
    if scenario == "replay":
        return [
            _format(
                "POST",
                "/betlink/authenticate",
                {
                    "X-API-Key": spec["betlink_key"],
                    "X-Idempotency-Key": key,
                    "Content-Type": "application/json",
                },
                body.encode(),
            )
            for key, body in _lines(spec["data_file"])
        ]
    raise ValueError(f"unknown scenario {scenario}")


async def _single(spec: dict[str, Any], pool: list[Request], record: Record, deadline: float) -> None:
    conn = Connection(spec["host"], int(spec["port"]))
    index = random.randrange(len(pool))
    try:
        while time.perf_counter() < deadline:
            index = (index + 1) % len(pool)
            started = time.perf_counter_ns()
            try:
                status, _ = await conn.call(pool[index])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                record.errors += 1
                await conn.close()
                continue
            record.add("request", (time.perf_counter_ns() - started) // 1000, status)
    finally:
        await conn.close()


async def _pair(spec: dict[str, Any], record: Record, deadline: float) -> None:
    conn = Connection(spec["host"], int(spec["port"]))
    gateway = {"Authorization": f"Bearer {spec['gateway_key']}"}
    users = int(spec["users"])
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter_ns()
            try:
                headers = {**gateway, "X-User-Id": f"player-{random.randint(1, users)}"}
                status, body = await conn.call(_format("POST", "/betlink/session", headers))
                middle = time.perf_counter_ns()
                record.add("session", (middle - started) // 1000, status)
                if status != 201:
                    continue
                launch = json.loads(body)
                auth = {
                    "requestId": str(uuid.uuid4()),
                    "userId": launch["userId"],
                    "operatorId": spec["operator_id"],
                    "launchToken": launch["launchToken"],
                    "authRequestedTimestamp": str(int(time.time() * 1000)),
                }
                headers = {
                    "X-API-Key": spec["betlink_key"],
                    "X-Idempotency-Key": str(uuid.uuid4()),
                    "Content-Type": "application/json",
                }
                request = _format("POST", "/betlink/authenticate", headers, json.dumps(auth).encode())
                status, _ = await conn.call(request)
                finished = time.perf_counter_ns()
                record.add("auth", (finished - middle) // 1000, status)
                if status == 200:
                    record.samples.setdefault("pair", []).append((finished - started) // 1000)
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError):
                record.errors += 1
                await conn.close()
    finally:
        await conn.close()


def _percentile(ordered: list[int], q: float) -> int:
    if not ordered:
        return 0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    record = Record()
    connections, duration = int(spec["connections"]), float(spec["duration"])
    pool = request_pool(spec) if spec["scenario"] != "pair" else []
    started = time.perf_counter()
    deadline = started + duration
    if spec["scenario"] == "pair":
        tasks = [_pair(spec, record, deadline) for _ in range(connections)]
    else:
        tasks = [_single(spec, pool, record, deadline) for _ in range(connections)]
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    kinds = {}
    for kind, values in record.samples.items():
        values.sort()
        kinds[kind] = {
            "count": len(values),
            "p50": _percentile(values, 50),
            "p90": _percentile(values, 90),
            "p99": _percentile(values, 99),
            "max": values[-1],
        }
    return {
        "duration_us": int(elapsed * 1_000_000),
        "requests": sum(record.statuses.values()),
        "errors": record.errors,
        "statuses": record.statuses,
        "kinds": kinds,
    }


def main(argv: list[str]) -> None:
    with open(argv[0], encoding="utf-8") as file:
        spec: dict[str, Any] = json.load(file)
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(run(spec))))


if __name__ == "__main__":
    main(sys.argv[1:])

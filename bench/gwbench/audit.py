"""What the service sends to PostgreSQL for one request of each kind, read from the server's log.

`log_statement = all` is switched on for a moment (ALTER SYSTEM + reload), one request of each
kind is sent between marker statements, and the log between the markers is split per request.
Every logged statement or `execute` is one round trip (a cached prepared statement is sent as
one Bind/Execute/Sync); the statements of the store that pgbench runs must be among them.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from gwbench.pg import Postgres
from gwbench.sql import unmatched

_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\] (\w+):  (.*)$")
_STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (.*)$", re.DOTALL)
_MARK = "gwbench-audit"


@dataclass
class Audit:
    statements: dict[str, list[str]] = field(default_factory=dict)  # request kind -> statements sent
    mismatches: list[str] = field(default_factory=list)  # SQL sent that pgbench cannot follow

    def round_trips(self, kind: str) -> int:
        return len(self.statements.get(kind, []))


def _post(conn: http.client.HTTPConnection, path: str, headers: dict[str, str], body: str = "") -> bytes:
    conn.request("POST", path, body=body.encode(), headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{path} answered {response.status}: {data[:200]!r}")
    return data


def _log_entries(text: str) -> list[tuple[str, str]]:
    """(severity, message) of each log entry; continuation lines joined to their entry."""
    entries: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = _ENTRY.match(line)
        if match:
            entries.append((match.group(2), match.group(3)))
        elif entries:
            severity, message = entries[-1]
            entries[-1] = (severity, message + "\n" + line)
    return entries


def run_audit(
    pg: Postgres, *, port: int, gateway_key: str, betlink_key: str, operator_id: str, bidpaw: bool
) -> Audit:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    gateway = {"Authorization": f"Bearer {gateway_key}", "X-User-Id": "player-1"}

    def new_session() -> dict[str, str]:
        launched: dict[str, str] = json.loads(_post(conn, "/betlink/session", gateway))
        return launched

    launched = new_session()  # the launch token that the authenticate step exchanges
    key = str(uuid.uuid4())

    def authenticate() -> bytes:
        body = {
            "requestId": str(uuid.uuid4()),
            "userId": launched["userId"],
            "operatorId": operator_id,
            "launchToken": launched["launchToken"],
            "authRequestedTimestamp": str(int(time.time() * 1000)),
        }
        headers = {"X-API-Key": betlink_key, "X-Idempotency-Key": key, "Content-Type": "application/json"}
        return _post(conn, "/betlink/authenticate", headers, json.dumps(body))

    def open_session() -> bytes:
        conn.request("GET", "/bidpaw/open-session", headers=gateway)
        return conn.getresponse().read()

    steps: list[tuple[str, Callable[[], object]]] = [
        ("session", new_session),
        ("authenticate", authenticate),
        ("replay", authenticate),  # the same key and launch token again
    ]
    if bidpaw:
        steps.append(("open-session", open_session))
    pg.psql("ALTER SYSTEM SET log_statement = 'all'", "SELECT pg_reload_conf()")
    time.sleep(0.3)
    offset = pg.log_file.stat().st_size
    try:
        for kind, step in steps:
            pg.psql(f"SELECT '{_MARK} {kind}'")
            step()
        pg.psql(f"SELECT '{_MARK} end'")
    finally:
        pg.psql("ALTER SYSTEM RESET log_statement", "SELECT pg_reload_conf()")
        conn.close()
    with pg.log_file.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    audit = Audit()
    current: str | None = None
    for severity, message in _log_entries(text):
        if severity != "LOG":
            continue
        match = _STATEMENT.match(message)
        if match is None:
            continue
        sql = match.group(1).strip()
        if _MARK in sql:
            current = sql.split(_MARK, 1)[1].strip(" ';")
            current = None if current == "end" else current
            continue
        if current is not None:
            audit.statements.setdefault(current, []).append(sql)
    audit.statements = {kind: _with_pings(sent) for kind, sent in audit.statements.items()}
    for kind, sent in audit.statements.items():
        for sql in unmatched(sent):
            audit.mismatches.append(f"{kind}: sent SQL that is not in partner_gateway.store: {short(sql)}")
    return audit


PING = "; -- inferred: an empty statement (SQLAlchemy's pool_pre_ping), which PostgreSQL does not log"


def _with_pings(statements: list[str]) -> list[str]:
    """SQLAlchemy's asyncpg ping is BEGIN, an empty statement, ROLLBACK: the log shows only BEGIN and
    ROLLBACK back to back, which nothing else sends; put the unlogged round trip between them."""
    result: list[str] = []
    for sql in statements:
        if result and result[-1].upper().startswith("BEGIN") and sql.upper().startswith("ROLLBACK"):
            result.append(PING)
        result.append(sql)
    return result


def short(sql: str, width: int = 70) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 1] + "…"

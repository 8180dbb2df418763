"""The SQL of the two hot endpoints, taken from partner_gateway.store, as pgbench scripts.

Which statements: the ones the running service sent for one request of each kind (the
round-trip audit, gwbench.audit), matched by text against the store's statements; without
an audit, the first of CANDIDATES that the store has; failing both, the bench stops and says
so. So the ceilings follow the code: merge two statements into one and
pgbench runs the merged one too.

Each bind parameter becomes a SQL expression over pgbench variables: `:k`, a fresh random
integer per transaction (idempotency key, new tokens), `:s`, a pre-made session, `:u`, a player.
Every statement ends with `\\aset`, so a later statement can use an earlier one's columns (the
session `id` that the lock returned). A parameter the bench does not know stops that script
with a message naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gwbench.pg import USERS
from gwbench.procs import BenchError

# SQLAlchemy's own pattern for `:name` binds in text() (a `::` cast is not one).
BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")

# Expressions by parameter name. `token_hash` depends on the statement (see _token_hash).
EXPRESSIONS: dict[str, str] = {
    "key": "md5(:k::text)::uuid",
    "fingerprint": "sha256(convert_to('fp-' || :k::text, 'UTF8'))",
    "now": "now()",
    "expires_at": "now() + interval '1 hour'",
    "user_id": "'player-' || :u::text",
    "session_id": ":id",  # the `id` column of the statement that found the session
    # Bytes like the sealed 200 body the service stores for replays (AES-GCM of ~330 bytes).
    "response": "decode(repeat('5a', 360), 'hex')",
}
NEW_LAUNCH_TOKEN = "sha256(convert_to('lt-' || :k::text, 'UTF8'))"
SEEDED_LAUNCH_TOKEN = "sha256(convert_to('seed-' || :s::text, 'UTF8'))"
NEW_SESSION_TOKEN = "sha256(convert_to('st-' || :k::text, 'UTF8'))"

# Store statement names per request, newest layout first (used when there is no audit).
CANDIDATES: dict[str, list[tuple[str, ...]]] = {
    "session": [("_CREATE_SESSION",)],
    "authenticate": [("_CLAIM_KEY_LOCK_SESSION", "_EXCHANGE")],
}


@dataclass(frozen=True)
class Statement:
    name: str
    sql: str
    source: str  # "audit" (sent by the service) or "store" (by name)


def normalized(sql: str) -> str:
    """SQL with binds as `?` and whitespace collapsed, to compare the store's with the server log's."""
    sql = re.sub(r"\$\d+", "?", BIND.sub("?", sql))
    return " ".join(sql.replace(";", " ").split()).lower()


def store_statements() -> dict[str, str]:
    """Every statement of partner_gateway.store (`:name` binds, as written), by attribute name."""
    from partner_gateway import store
    from partner_gateway.db import Statement

    return {name: value.text for name, value in vars(store).items() if isinstance(value, Statement)}


_CONTROL = re.compile(r"^\s*(begin|commit|rollback|;)", re.IGNORECASE)


def resolve(kind: str, sent: Sequence[str] | None) -> list[Statement]:
    """The store's statements for one request kind, in the order the service runs them."""
    store = store_statements()
    if sent:
        by_text = {normalized(sql): name for name, sql in store.items()}
        found = [by_text.get(normalized(sql)) for sql in sent if not _CONTROL.match(sql)]
        if found and all(found):
            return [Statement(name, store[name], "audit") for name in found if name]
    for layout in CANDIDATES[kind]:
        if all(name in store for name in layout):
            return [Statement(name, store[name], "store") for name in layout]
    raise BenchError(
        f"partner_gateway.store has none of the {kind} statements {CANDIDATES[kind]}: update gwbench/sql.py"
    )


def unmatched(sent: Iterable[str]) -> list[str]:
    """Statements the service sent that are none of the store's (sent from elsewhere)."""
    known = {normalized(sql) for sql in store_statements().values()}
    return [sql for sql in sent if not _CONTROL.match(sql) and normalized(sql) not in known]


def _token_hash(sql: str, *, lookup: str) -> str:
    text = normalized(sql)
    if "launch_token_hash = ?" in text:
        return lookup  # finds the session by its launch token
    if "insert into user_sessions" in text:
        return NEW_LAUNCH_TOKEN  # issues a launch token
    return NEW_SESSION_TOKEN  # stores the new session token's digest


def _render(statement: Statement, *, lookup: str) -> str:
    expressions = {**EXPRESSIONS, "token_hash": _token_hash(statement.sql, lookup=lookup)}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in expressions:
            raise BenchError(
                f"store.{statement.name} has a parameter :{name} that the bench cannot fill: "
                f"add an expression for it to EXPRESSIONS in bench/gwbench/sql.py"
            )
        return f"({expressions[name]})"

    sql = BIND.sub(replace, statement.sql.strip().rstrip(";").strip())
    return f"{sql}\n\\aset"


def _header(*, seeded_sessions: int | None = None) -> list[str]:
    lines = ["\\set k random(1, 9007199254740991)", f"\\set u random(1, {USERS})"]
    if seeded_sessions:
        lines.append(f"\\set s random(1, {seeded_sessions})")
    return lines


def session_script(statements: Sequence[Statement]) -> str:
    """/betlink/session's statements, autocommit: the ceiling for that SQL."""
    lines = _header() + [_render(stmt, lookup=NEW_LAUNCH_TOKEN) for stmt in statements]
    return "\n".join(lines) + "\n"


def authenticate_script(statements: Sequence[Statement], *, seeded_sessions: int) -> str:
    """/betlink/authenticate's transaction on a pre-made session: BEGIN, its statements, COMMIT."""
    lines = [*_header(seeded_sessions=seeded_sessions), "BEGIN;"]
    lines += [_render(stmt, lookup=SEEDED_LAUNCH_TOKEN) for stmt in statements]
    return "\n".join([*lines, "COMMIT;"]) + "\n"


def pair_script(session: Sequence[Statement], authenticate: Sequence[Statement]) -> str:
    """The session statements, then the authenticate transaction on the session they created."""
    lines = [*_header(), *(_render(stmt, lookup=NEW_LAUNCH_TOKEN) for stmt in session), "BEGIN;"]
    lines += [_render(stmt, lookup=NEW_LAUNCH_TOKEN) for stmt in authenticate]
    return "\n".join([*lines, "COMMIT;"]) + "\n"


def describe(statements: Mapping[str, Sequence[Statement]]) -> list[str]:
    return [
        f"{kind}: " + ", ".join(f"store.{stmt.name} ({stmt.source})" for stmt in stmts)
        for kind, stmts in statements.items()
    ]

"""pgbench scripts made of the store's own statements (partner_gateway.store), for the SQL ceilings.

Each `:name` bind of a statement becomes a SQL expression over pgbench's variables: `:k`, a
fresh random integer per transaction (keys, new tokens), `:u`, a player; `:id` is the session
that the statement before it returned (`\\aset`). So the ceilings follow the store's SQL.
"""

from __future__ import annotations

import re

from gwbench.servers import PLAYERS, BenchError

EXPRESSIONS = {
    "key": "md5(:k::text)::uuid",
    "fingerprint": "sha256(convert_to('fp-' || :k::text, 'UTF8'))",
    "now": "now()",
    "expires_at": "now() + interval '1 hour'",
    "user_id": "'player-' || :u::text",
    "session_id": ":id",
    "response": "decode(repeat('5a', 360), 'hex')",  # the size of the sealed answer a replay reads
}
LAUNCH_TOKEN = "sha256(convert_to('lt-' || :k::text, 'UTF8'))"
SESSION_TOKEN = "sha256(convert_to('st-' || :k::text, 'UTF8'))"
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # partner_gateway.db's: `:name`, not a `::` cast


def _statement(name: str, token_hash: str) -> str:
    from partner_gateway import store

    statement = getattr(store, name, None)
    if statement is None:
        raise BenchError(f"partner_gateway.store has no {name}: update bench/gwbench/pgbench.py")
    expressions = {**EXPRESSIONS, "token_hash": token_hash}

    def expression(match: re.Match[str]) -> str:
        if match.group(1) not in expressions:
            raise BenchError(f"store.{name} has a parameter :{match.group(1)}: add it to gwbench/pgbench.py")
        return f"({expressions[match.group(1)]})"

    return _BIND.sub(expression, statement.text.strip().rstrip(";")) + "\n\\aset"


def script(kind: str, *, set_local: dict[str, str] | None = None) -> str:
    """`session`: /betlink/session's statement; `pair`: it, then /betlink/authenticate's transaction
    on the session it made. `set_local`: SET LOCAL these settings with BEGIN, in one round trip."""
    lines = ["\\set k random(1, 9007199254740991)", f"\\set u random(1, {PLAYERS})"]
    lines.append(_statement("_CREATE_SESSION", LAUNCH_TOKEN))
    if kind == "pair":
        sets = "".join(f" \\; SET LOCAL {name} = '{value}'" for name, value in (set_local or {}).items())
        lines.append(f"BEGIN{sets};")
        lines.append(_statement("_CLAIM_KEY_LOCK_SESSION", LAUNCH_TOKEN))
        lines += [_statement("_EXCHANGE", SESSION_TOKEN), "COMMIT;"]
    return "\n".join(lines) + "\n"


def parse(stdout: str) -> dict[str, float]:
    """pgbench's summary; it prints no percentiles, so p50 holds the average latency."""

    def number(pattern: str) -> float:
        match = re.search(pattern, stdout)
        if match is None:
            raise ValueError(pattern)
        return float(match.group(1))

    units = number(r"actually processed: (\d+)")
    failed = re.search(r"number of failed transactions: (\d+)", stdout)
    return {
        "seconds": units / number(r"tps = ([\d.]+)"),
        "units": units,
        "errors": float(failed.group(1)) if failed else 0.0,
        "p50": number(r"latency average = ([\d.]+) ms"),
        "p99": 0.0,
    }

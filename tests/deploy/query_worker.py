"""One process of the mix-up check: the service's `Database` runs queries only it would send,
and counts the answers that are not its own. Prints {"own": n, "foreign": n, "errors": n}.

`python -m tests.deploy.query_worker URL TAG COUNT [--statement-cache N]`; the cache size
overrides what DB_POOLER=pgbouncer chooses (0), to show what the check sees without it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections import Counter

from partner_gateway.config import Settings
from partner_gateway.db import Statement, connection_mode, create_database

CONCURRENCY = 4
VARIANTS = 4  # several statements, so that statement names collide across processes


async def run(url: str, tag: str, count: int, statement_cache: int | None) -> Counter[str]:
    settings = Settings(_env_file=None, database_url=url, db_pooler="pgbouncer", db_pool_size=CONCURRENCY)
    mode = connection_mode(settings)
    if statement_cache is not None:
        mode = dataclasses.replace(mode, statement_cache_size=statement_cache)
    database = create_database(settings, url, mode=mode)
    queries = [
        Statement(f"variant_{v}", f"SELECT '{tag}' AS tag, {v} AS variant, CAST(:n AS integer) AS n")
        for v in range(VARIANTS)
    ]
    outcomes: Counter[str] = Counter()

    async def one(i: int) -> None:
        opened = database.statement() if i % 2 else database.transaction()
        try:
            async with opened as conn:
                row = await conn.fetchrow(queries[i % VARIANTS], n=i)
        except Exception:
            outcomes["errors"] += 1
            return
        own = row is not None and (row["tag"], row["variant"], row["n"]) == (tag, i % VARIANTS, i)
        outcomes["own" if own else "foreign"] += 1

    async def worker(start: int) -> None:
        for i in range(start, count, CONCURRENCY):
            await one(i)

    try:
        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    finally:
        await database.close()
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("tag")
    parser.add_argument("count", type=int)
    parser.add_argument("--statement-cache", type=int)
    args = parser.parse_args()
    outcomes = asyncio.run(run(args.url, args.tag, args.count, args.statement_cache))
    print(json.dumps({name: outcomes[name] for name in ("own", "foreign", "errors")}))  # noqa: T201


if __name__ == "__main__":
    main()

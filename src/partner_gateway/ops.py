"""Routes for operators and probes: liveness, readiness."""

from __future__ import annotations

import asyncio

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from partner_gateway import store
from partner_gateway.db import Database, DatabaseDep, utc_now
from partner_gateway.errors import is_database_unavailable, problem
from partner_gateway.metrics import WALLET_OLDEST_OPEN_AGE, WALLET_OPEN, WALLET_STUCK_OPEN, exposition
from partner_gateway.openapi import problem_responses
from partner_gateway.schema import head_revision

router = APIRouter(tags=["operations"])

TIMEOUTS = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
ISOLATION = "default_transaction_isolation"


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str = Field(title="Status", examples=["ok"])


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ready", "schemaRevision": "0004_player_block_events"}]}
    )

    status: str = Field(title="Status", examples=["ready"])
    schemaRevision: str = Field(
        title="Schema revision", description="The Alembic revision the database is at."
    )


@router.get("/healthz", response_model=Health)
@router.head("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get("/readyz", responses={200: {"model": Readiness}, **problem_responses(503)})
@router.head("/readyz", include_in_schema=False)
async def readyz(request: Request, db: DatabaseDep) -> JSONResponse:
    """200 only when the database answers, its schema is at the newest migration and its sessions
    are bounded (timeouts set, READ COMMITTED)."""
    try:
        head = head_revision()
        async with db.statement() as conn:
            revision = await store.schema_revision(conn)
            in_force = await store.session_settings(conn, [*TIMEOUTS, ISOLATION])
    except Exception as exc:
        if not is_database_unavailable(exc) and not _missing_schema(exc):
            raise
        return problem(503, "the database is not reachable or has no schema")
    if revision != head:
        return problem(503, f"the schema is at {revision}, not at the newest migration {head}")
    if unbounded := _unbounded(in_force):
        # Behind PgBouncer the bounds are the role's defaults, which `migrate` writes.
        detail = (
            f"database sessions run unbounded ({unbounded}): run `partner-gateway migrate` with DB_POOLER set"
        )
        return problem(503, detail)
    return JSONResponse({"status": "ready", "schemaRevision": revision})


def _unbounded(in_force: dict[str, str]) -> str:
    """What would let a request wait without end, or run at another isolation level."""
    wrong = [f"{name} = {in_force.get(name)}" for name in TIMEOUTS if in_force.get(name) in (None, "0")]
    if (isolation := in_force.get(ISOLATION)) != "read committed":
        wrong.append(f"{ISOLATION} = {isolation}")
    return ", ".join(wrong)


def _missing_schema(exc: Exception) -> bool:
    return "alembic_version" in str(exc) and "does not exist" in str(exc)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
@router.head("/metrics", include_in_schema=False)
async def metrics(db: DatabaseDep) -> Response:
    """Prometheus text format: HTTP, BetLink auth outcomes, BidPaw calls and wallet callbacks, the
    casino wallet's calls and open transactions, database pool, build."""
    await _wallet_gauges(db)
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


WALLET_STATS_TIMEOUT_SECONDS = 1.0


async def _wallet_gauges(db: Database) -> None:
    """The open wallet transactions, read now; a database that does not answer at once leaves the
    last values (and the scrape is not held up)."""
    try:
        async with asyncio.timeout(WALLET_STATS_TIMEOUT_SECONDS), db.statement() as conn:
            stats = await store.open_wallet_stats(conn)
    except Exception as exc:
        if not is_database_unavailable(exc) and not isinstance(exc, asyncpg.UndefinedTableError):
            raise
        return
    WALLET_OPEN.set(stats.open)
    WALLET_STUCK_OPEN.set(stats.stuck)
    oldest = 0.0 if stats.oldest is None else (utc_now() - stats.oldest).total_seconds()
    WALLET_OLDEST_OPEN_AGE.set(max(oldest, 0.0))

"""The hand-written floor: the service's two hot endpoints, written as lean as FastAPI allows.

The same statements (partner_gateway.store's, sent as the store sends them), the same header
checks, the same answers, on a bare asyncpg pool with nothing between the endpoint and the
driver: no settings object, no middleware, no logging, no metrics, no error renderers, no
sealing or pseudonyms. Served exactly like the service (uvicorn with the options of
`partner-gateway serve`, the same worker count), it is what the service's own code is measured
against: `service ÷ floor`. `trivial_app` is the HTTP stack's ceiling: one endpoint, nothing else.

Its pool is asyncpg's own, with the reset on release switched off (the service's pool sends
none either), so the floor is the stricter one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
from fastapi import FastAPI, Request, Response

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


def trivial_app() -> FastAPI:
    """The ceiling of the HTTP stack: one FastAPI endpoint, served like the service."""
    app = FastAPI(title="trivial")

    @app.get("/trivial")
    async def trivial() -> dict[str, str]:
        return {"status": "ok"}

    return app


def floor_app() -> FastAPI:
    from partner_gateway import store
    from partner_gateway.db import asyncpg_dsn

    gateway_key = os.environ["GATEWAY_API_KEYS"].split(",")[0].encode()
    betlink_key = os.environ["BETLINK_API_KEYS"].split(",")[0].encode()
    operator_id = os.environ["BETLINK_OPERATOR_ID"]
    launch_ttl = timedelta(seconds=int(os.environ.get("BETLINK_LAUNCH_TOKEN_TTL_SECONDS", "10")))
    session_ttl, key_ttl = timedelta(minutes=30), timedelta(days=1)
    create, claim = store._CREATE_SESSION.sql, store._CLAIM_KEY_LOCK_SESSION.sql
    processed, exchange = store._PROCESSED_KEY.sql, store._EXCHANGE.sql
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            asyncpg_dsn(os.environ["DATABASE_URL"]),
            min_size=1,
            max_size=int(os.environ.get("DB_POOL_SIZE", "20")),
            reset=_no_reset,
            server_settings={"application_name": "gwbench-floor"},
        )
        pools.append(pool)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    def problem(status: int) -> Response:
        return Response(b'{"status":%d}' % status, status_code=status, media_type="application/problem+json")

    def failure(code: str, status: int) -> Response:
        body = f'{{"status":"FAILED_AUTHENTICATION","errorCode":"{code}","errorMessage":"{code}"}}'
        return Response(body.encode(), status_code=status, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/betlink/session", status_code=201)
    async def session(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not hmac.compare_digest(auth[7:].encode(), gateway_key):
            return problem(401)
        user_id = request.headers.get("x-user-id")
        if not user_id:
            return problem(400)
        token, now = secrets.token_urlsafe(32), datetime.now(UTC)
        async with pools[0].acquire() as conn:
            row = await conn.fetchrow(
                create, user_id, now, hashlib.sha256(token.encode()).digest(), now + launch_ttl
            )
        if row is None:
            return problem(403)
        body = json.dumps({"launchToken": token, "userId": user_id, "operatorId": operator_id})
        return Response(body.encode(), status_code=201, media_type="application/json")

    @app.post("/betlink/authenticate")
    async def authenticate(request: Request) -> Response:
        if not hmac.compare_digest(request.headers.get("x-api-key", "").encode(), betlink_key):
            return failure("AUTHENTICATION_FAILED", 403)
        raw_key = request.headers.get("x-idempotency-key", "")
        if not UUID.match(raw_key):
            return failure("MISSING_PARAMETER", 400)
        body = json.loads(await request.body())
        key, now = uuid.UUID(raw_key), datetime.now(UTC)
        material = json.dumps([body["userId"], body["operatorId"], body["launchToken"]]).encode()
        fingerprint = hashlib.sha256(material).digest()
        lookup = hashlib.sha256(body["launchToken"].encode()).digest()
        async with pools[0].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(claim, key, fingerprint, now, now + key_ttl, lookup)
            if not row["claimed"]:
                done = await conn.fetchrow(processed, key)
                return Response(done["response"], media_type="application/json")
            if row["id"] is None or row["user_id"] != body["userId"]:
                return failure("INVALID_SESSION", 401)
            if row["exchanged"] or row["revoked_at"] is not None or row["launch_expires_at"] <= now:
                return failure("INVALID_SESSION", 401)
            token = secrets.token_urlsafe(32)
            expires = now + session_ttl
            answer = json.dumps(
                {
                    "requestId": body["requestId"],
                    "userId": body["userId"],
                    "operatorId": operator_id,
                    "operatorSessionToken": token,
                    "timestamp": str(int(now.timestamp() * 1000)),
                    "sessionExpiry": str(int(expires.timestamp() * 1000)),
                    "redirectUrl": "https://casino.example/",
                },
                separators=(",", ":"),
            ).encode()
            await conn.execute(
                exchange, hashlib.sha256(token.encode()).digest(), expires, row["id"], answer, key
            )
        return Response(answer, media_type="application/json")

    return app

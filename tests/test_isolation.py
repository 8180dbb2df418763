"""Serialization failures and deadlocks, wherever they occur, are a retryable 503, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import GATEWAY_HEADERS
from tests.helpers import authenticate, failure, launch

# Real errors from the real server: triggers raise the SQLSTATE named in the player's id, on the
# player upsert (session, block) or on the session token's UPDATE (the authenticate exchange).
TRIGGERS = """
CREATE FUNCTION raise_sqlstate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id LIKE TG_ARGV[0] || '%' THEN
        RAISE EXCEPTION 'injected' USING ERRCODE = substr(NEW.user_id, length(TG_ARGV[0]) + 1);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER raise_on_player BEFORE INSERT OR UPDATE ON players
    FOR EACH ROW EXECUTE FUNCTION raise_sqlstate('raise-on-player-');
CREATE TRIGGER raise_on_exchange BEFORE UPDATE ON user_sessions
    FOR EACH ROW EXECUTE FUNCTION raise_sqlstate('raise-on-exchange-');
"""
DROP = """
DROP TRIGGER IF EXISTS raise_on_player ON players;
DROP TRIGGER IF EXISTS raise_on_exchange ON user_sessions;
DROP FUNCTION IF EXISTS raise_sqlstate();
"""
SQLSTATES = ["40001", "40P01"]  # serialization_failure, deadlock_detected


@pytest.fixture
async def failing_triggers(engine: AsyncEngine) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        for statement in TRIGGERS.split(";\nCREATE TRIGGER"):
            sql = statement if statement.startswith("\nCREATE FUNCTION") else "CREATE TRIGGER" + statement
            await conn.execute(text(sql))
    yield
    async with engine.begin() as conn:
        for sql in DROP.strip().splitlines():
            await conn.execute(text(sql))


@pytest.mark.usefixtures("failing_triggers")
@pytest.mark.parametrize("sqlstate", SQLSTATES)
class TestRetryableConflicts:
    async def test_on_session_it_is_a_503_problem(self, client: httpx.AsyncClient, sqlstate: str) -> None:
        response = await client.post(
            "/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": f"raise-on-player-{sqlstate}"}
        )
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"

    async def test_on_authenticate_it_is_503_request_timed_out(
        self, client: httpx.AsyncClient, engine: AsyncEngine, sqlstate: str
    ) -> None:
        session = await launch(client, f"raise-on-exchange-{sqlstate}")
        response = await authenticate(client, session)
        assert response.status_code == 503
        assert response.json() == failure("REQUEST_TIMED_OUT", "the database did not answer in time; retry")
        async with engine.connect() as conn:  # rolled back whole: the key is not processed
            assert (await conn.execute(text("SELECT count(*) FROM idempotency_keys"))).scalar() == 0
        assert (await authenticate(client, session)).status_code == 503  # and still retryable

    async def test_on_block_it_is_a_503_problem(self, client: httpx.AsyncClient, sqlstate: str) -> None:
        response = await client.put(f"/players/raise-on-player-{sqlstate}/block", headers=GATEWAY_HEADERS)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"

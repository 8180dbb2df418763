"""POST /betlink/authenticate: every row of the contract's check table, in order."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway import store
from partner_gateway.betlink import service
from partner_gateway.betlink.schemas import AuthenticateRequest
from partner_gateway.errors import BetLinkError
from tests.conftest import BETLINK_KEY_ROTATED, GATEWAY_HEADERS, OPERATOR_ID, REDIRECT_URL, app_of
from tests.helpers import auth_body, auth_headers, authenticate, failure, hold_key_claim, launch

URL = "/betlink/authenticate"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43,}$")


class TestSuccess:
    async def test_answers_exactly_betlinks_eight_fields(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        body = auth_body(session)
        response = await client.post(URL, headers=auth_headers(), json=body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        assert list(answer) == [
            "requestId",
            "userId",
            "operatorId",
            "operatorSessionToken",
            "timestamp",
            "status",
            "sessionExpiry",
            "redirectUrl",
        ]
        assert answer["requestId"] == body["requestId"]
        assert answer["userId"] == "player-1"
        assert answer["operatorId"] == OPERATOR_ID
        assert TOKEN.match(answer["operatorSessionToken"])
        assert answer["status"] == "AUTHENTICATED"
        assert answer["redirectUrl"] == REDIRECT_URL
        assert answer["timestamp"].isdigit()
        assert int(answer["sessionExpiry"]) - int(answer["timestamp"]) == 1800 * 1000

    async def test_accepts_the_rotated_api_key(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        headers = auth_headers(**{"X-API-Key": BETLINK_KEY_ROTATED})
        assert (await client.post(URL, headers=headers, json=auth_body(session))).status_code == 200

    async def test_stores_only_digests_and_a_sealed_reply(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        session = await launch(client)
        answer = (await authenticate(client, session)).json()
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT s::text FROM user_sessions s"))).scalars().all()
            keys = (await conn.execute(text("SELECT k::text FROM idempotency_keys k"))).scalars().all()
        dump = " ".join([*rows, *keys])
        for secret in (session["launchToken"], answer["operatorSessionToken"]):
            assert secret not in dump
            assert secret.encode().hex() not in dump


class TestRow1ApiKey:
    @pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
    async def test_missing_or_wrong_key_is_403(
        self, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        session = await launch(client)
        full = {"X-Idempotency-Key": str(uuid.uuid4()), **headers}
        response = await client.post(URL, headers=full, json=auth_body(session))
        assert response.status_code == 403
        assert response.json() == failure("AUTHENTICATION_FAILED", "missing or invalid X-API-Key")

    async def test_key_is_checked_before_the_body(self, client: httpx.AsyncClient) -> None:
        response = await client.post(URL, content=b"not json")
        assert response.status_code == 403
        assert response.json()["errorCode"] == "AUTHENTICATION_FAILED"


def _valid() -> dict[str, Any]:
    return auth_body({"userId": "player-1", "launchToken": "t" * 22})


MALFORMED_BODIES: dict[str, bytes] = {
    "empty": b"",
    "not json": b"{nope",
    "array": b"[]",
    "string": b'"x"',
    "null": b"null",
    "truncated": json.dumps(_valid()).encode()[:-3],
    "invalid utf-8": b'{"requestId": "\xff\xfe"}',
    "deep nesting": b'{"a":' * 10000 + b"1" + b"}" * 10000,
    **{f"missing {f}": json.dumps({k: v for k, v in _valid().items() if k != f}).encode() for f in _valid()},
    **{f"empty {f}": json.dumps({**_valid(), f: ""}).encode() for f in _valid()},
    **{f"number {f}": json.dumps({**_valid(), f: 12345}).encode() for f in _valid()},
    **{f"null {f}": json.dumps({**_valid(), f: None}).encode() for f in _valid()},
    "requestId not a UUID": json.dumps({**_valid(), "requestId": "123"}).encode(),
    "timestamp not digits": json.dumps({**_valid(), "authRequestedTimestamp": "16409952OO000"}).encode(),
    "timestamp negative": json.dumps({**_valid(), "authRequestedTimestamp": "-1"}).encode(),
    "timestamp unicode digits": json.dumps({**_valid(), "authRequestedTimestamp": "١٢٣"}).encode(),
}


class TestRow2Shape:
    @pytest.mark.parametrize("name", list(MALFORMED_BODIES))
    async def test_malformed_body_is_400_missing_parameter(
        self, client: httpx.AsyncClient, name: str
    ) -> None:
        response = await client.post(URL, headers=auth_headers(), content=MALFORMED_BODIES[name])
        assert response.status_code == 400, response.text
        answer = response.json()
        assert set(answer) == {"status", "errorCode", "errorMessage"}
        assert answer["status"] == "FAILED_AUTHENTICATION"
        assert answer["errorCode"] == "MISSING_PARAMETER"

    @pytest.mark.parametrize("value", [None, "", "not-a-uuid", "1234", "{" + str(uuid.UUID(int=1)) + "}"])
    async def test_bad_idempotency_key_is_400(self, client: httpx.AsyncClient, value: str | None) -> None:
        session = await launch(client)
        headers = auth_headers()
        if value is None:
            del headers["X-Idempotency-Key"]
        else:
            headers["X-Idempotency-Key"] = value
        response = await client.post(URL, headers=headers, json=auth_body(session))
        assert response.status_code == 400
        assert response.json() == failure("MISSING_PARAMETER", "X-Idempotency-Key must be a UUID")

    async def test_huge_and_nul_strings_are_answered_without_a_500(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        for overrides in ({"userId": "a\x00b"}, {"launchToken": "x" * 50000}, {"userId": "é" * 30000}):
            response = await authenticate(client, session, **overrides)
            assert response.status_code in (400, 401, 413), response.text
            assert response.json()["status"] == "FAILED_AUTHENTICATION"

    async def test_the_message_never_echoes_the_input(self, client: httpx.AsyncClient) -> None:
        secret_like = "tok-SECRET-1234567890"
        body = {**_valid(), "launchToken": 5, "userId": secret_like, "requestId": secret_like}
        response = await client.post(URL, headers=auth_headers(), json=body)
        assert secret_like not in response.text


class TestRow3Operator:
    async def test_another_operator_is_403(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        response = await authenticate(client, session, operatorId="someone-else")
        assert response.status_code == 403
        assert response.json() == failure("AUTHENTICATION_FAILED", "operatorId is not this operator's")
        assert (await authenticate(client, session)).status_code == 200  # nothing consumed


class TestRows4And5Idempotency:
    async def test_replays_stored_body_byte_for_byte_with_a_new_request_id(
        self, client: httpx.AsyncClient
    ) -> None:
        session = await launch(client)
        key = str(uuid.uuid4())
        first = await authenticate(client, session, key=key)
        again = await authenticate(client, session, key=key, authRequestedTimestamp="1700000000000")
        assert first.status_code == again.status_code == 200
        assert again.content == first.content

    async def test_key_reused_for_another_launch_token_is_403_and_consumes_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        first_session, other_session = await launch(client), await launch(client)
        key = str(uuid.uuid4())
        assert (await authenticate(client, first_session, key=key)).status_code == 200
        response = await authenticate(client, other_session, key=key)
        assert response.status_code == 403
        assert response.json() == failure(
            "AUTHENTICATION_FAILED", "this X-Idempotency-Key was used for another request"
        )
        assert (await authenticate(client, other_session)).status_code == 200

    async def test_key_reused_for_another_user_id_is_403(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        key = str(uuid.uuid4())
        assert (await authenticate(client, session, key=key)).status_code == 200
        response = await authenticate(client, session, key=key, userId="player-2")
        assert response.json()["errorCode"] == "AUTHENTICATION_FAILED"

    async def test_a_failed_attempts_key_is_evaluated_afresh(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        session = await launch(client)
        key = str(uuid.uuid4())
        unknown = await authenticate(client, session, key=key, launchToken="unknown-token")
        assert unknown.status_code == 401
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE players SET blocked = true"))
        blocked = await authenticate(client, session, key=key)
        assert blocked.json()["errorCode"] == "USER_BLOCKED"
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE players SET blocked = false"))
        assert (await authenticate(client, session, key=key)).status_code == 200
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM idempotency_keys"))).scalar() == 1


class TestRows6To9Session:
    async def test_unknown_launch_token_is_401(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        response = await authenticate(client, session, launchToken="never-issued")
        assert response.status_code == 401
        assert response.json() == failure("INVALID_SESSION", "unknown launch token")

    async def test_another_players_user_id_is_400_invalid_user(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        response = await authenticate(client, session, userId="player-2")
        assert response.status_code == 400
        assert response.json() == failure("INVALID_USER", "userId does not match the session's player")

    async def test_blocked_player_is_400_user_blocked(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        session = await launch(client)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE players SET blocked = true WHERE user_id = 'player-1'"))
        response = await authenticate(client, session)
        assert response.status_code == 400
        assert response.json() == failure("USER_BLOCKED", "the player is blocked")

    async def test_a_used_launch_token_is_401_under_another_key(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        assert (await authenticate(client, session)).status_code == 200
        response = await authenticate(client, session)
        assert response.status_code == 401
        assert response.json() == failure(
            "INVALID_SESSION", "the launch token was already exchanged for a session token"
        )

    async def test_a_revoked_launch_token_is_401(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        session = await launch(client)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE user_sessions SET revoked_at = now()"))
        response = await authenticate(client, session)
        assert response.status_code == 401
        assert response.json() == failure("INVALID_SESSION", "the launch token was revoked")

    async def test_an_expired_launch_token_is_401_and_says_so(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        session = await launch(client)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE user_sessions SET launch_expires_at = now() - interval '1 s'"))
        response = await authenticate(client, session)
        assert response.status_code == 401
        assert response.json() == failure("INVALID_SESSION", "the launch token has expired")

    async def test_user_id_check_comes_before_the_blocked_check(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        session = await launch(client)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE players SET blocked = true"))
        assert (await authenticate(client, session, userId="player-2")).json()["errorCode"] == "INVALID_USER"


async def exchange_at(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    *,
    offset: float,
    clock_offset: float | None = None,
) -> service.Authenticated:
    """Run the service on a fresh launch token, `offset` seconds after its session was created
    (and, when given, with the clock reading `clock_offset` seconds once the row is locked)."""
    session = await launch(client)
    app = app_of(client)
    async with engine.connect() as conn:
        created = (await conn.execute(text("SELECT created_at FROM user_sessions"))).scalar_one()
    clock_at = created + timedelta(seconds=clock_offset if clock_offset is not None else 0)
    async with app.state.database.transaction() as conn:
        return await service.authenticate(
            conn,
            request=AuthenticateRequest.model_validate(auth_body(session)),
            idempotency_key=uuid.uuid4(),
            settings=app.state.settings,
            cipher=app.state.user_id_cipher,
            sealer=app.state.sealer,
            now=created + timedelta(seconds=offset),
            clock=lambda: clock_at,
        )


class TestLaunchTokenExpiry:
    """Time is a parameter: the exchange at TTL-1 s succeeds, at TTL+1 s it is refused."""

    async def test_one_second_before_the_ttl_succeeds(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        assert not (await exchange_at(client, engine, offset=9)).replayed

    async def test_one_second_after_the_ttl_is_invalid_session(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        with pytest.raises(BetLinkError) as raised:
            await exchange_at(client, engine, offset=11)
        assert (raised.value.code, raised.value.detail) == ("INVALID_SESSION", "the launch token has expired")

    async def test_a_token_that_expired_while_the_request_queued_is_refused(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        # Arrived in time (5 s), but locked the session row only after the TTL (15 s).
        with pytest.raises(BetLinkError) as raised:
            await exchange_at(client, engine, offset=5, clock_offset=15)
        assert raised.value.code == "INVALID_SESSION"


class TestRows10And11Failures:
    async def test_duplicate_waiting_past_the_lock_timeout_is_503_and_frees_its_connection(
        self, make_client: Callable[..., Any], engine: AsyncEngine
    ) -> None:
        client = await make_client(db_timeout_seconds=1)
        session = await launch(client)
        key = uuid.uuid4()
        async with engine.connect() as blocker:
            # A first request that is still running: it holds the key's claim, uncommitted.
            await hold_key_claim(blocker, key)
            response = await authenticate(client, session, key=str(key))
            await blocker.rollback()
        assert response.status_code == 503
        assert response.json() == failure("REQUEST_TIMED_OUT", "the database did not answer in time; retry")
        app = app_of(client)
        assert app.state.database.pool.in_use == 0
        assert (await authenticate(client, session, key=str(key))).status_code == 200

    async def test_anything_unexpected_is_500_general_exception(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        session = await launch(client)

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(store, "claim_key", broken)
        response = await authenticate(client, session)
        assert response.status_code == 500
        assert response.json() == failure("GENERAL_EXCEPTION", "unexpected error")


class TestTokenAnswersAreNeverCached:
    async def test_authenticate_and_its_replay_are_no_store(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        key = str(uuid.uuid4())
        first = await authenticate(client, session, key=key)
        replay = await authenticate(client, session, key=key)
        assert first.status_code == replay.status_code == 200
        assert first.headers["cache-control"] == replay.headers["cache-control"] == "no-store"

    async def test_introspection_is_no_store(self, client: httpx.AsyncClient) -> None:
        token = (await authenticate(client, await launch(client))).json()["operatorSessionToken"]
        for presented in (token, "unknown"):
            response = await client.post(
                "/betlink/sessions/introspect",
                headers=GATEWAY_HEADERS,
                json={"operatorSessionToken": presented},
            )
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"


async def _expire_key(engine: AsyncEngine, key: str) -> None:
    """The key's IDEMPOTENCY_TTL_SECONDS passed, and no purge has run yet."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = :k"),
            {"k": uuid.UUID(key)},
        )


class TestExpiredKeys:
    """A key past its life is forgotten at once (the claim takes the row over), purge or not."""

    async def test_an_expired_key_is_never_replayed(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        session, key = await launch(client), str(uuid.uuid4())
        assert (await authenticate(client, session, key=key)).status_code == 200
        await _expire_key(engine, key)
        again = await authenticate(client, session, key=key)
        assert again.status_code == 401  # evaluated afresh: the launch token is already used
        assert again.json() == failure(
            "INVALID_SESSION", "the launch token was already exchanged for a session token"
        )

    async def test_an_expired_key_serves_a_new_request_and_then_replays_its_answer(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        key = str(uuid.uuid4())
        first = await authenticate(client, await launch(client), key=key)
        await _expire_key(engine, key)
        session = await launch(client, "player-2")  # another request: no fingerprint mismatch
        fresh = await authenticate(client, session, key=key)
        assert fresh.status_code == 200
        assert fresh.content != first.content
        assert fresh.json()["userId"] == session["userId"]
        assert (await authenticate(client, session, key=key)).content == fresh.content
        async with engine.connect() as conn:
            expires = (
                await conn.execute(text("SELECT expires_at > now() FROM idempotency_keys"))
            ).scalar_one()
        assert expires  # the taken-over row got a new life

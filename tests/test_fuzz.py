"""No input, however malformed, produces a 500 or FastAPI's default error shape."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BETLINK_KEY, GATEWAY_HEADERS

# Text with lone surrogates too: json.dumps writes them as \udXXX escapes, which some parsers accept.
any_text = st.text(st.characters(codec=None), max_size=50) | st.text(
    st.characters(categories=["Cs"]), min_size=1, max_size=3
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["requestId", "userId", "operatorId", "launchToken", "authRequestedTimestamp"]
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"operatorSessionToken": any_text}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={f: json_values for f in FIELDS}).map(
        lambda v: json.dumps(v).encode()
    ),
)
header_values = st.binary(min_size=0, max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _shape_ok(response: httpx.Response, *, betlink: bool) -> None:
    assert response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    if betlink:
        assert (
            set(body) in ({"status", "errorCode", "errorMessage"}, set())
            or body.get("status") == "AUTHENTICATED"
        )
    else:
        assert set(body) >= {"type", "title", "status", "detail"} or response.status_code < 300


class TestFuzz:
    @FUZZ
    @given(body=bodies, key=header_values)
    async def test_authenticate(self, client: httpx.AsyncClient, body: bytes, key: bytes) -> None:
        headers = [(b"x-api-key", BETLINK_KEY.encode()), (b"x-idempotency-key", key)]
        response = await client.post("/betlink/authenticate", headers=headers, content=body)
        _shape_ok(response, betlink=True)
        assert response.status_code in (400, 401, 403)

    @FUZZ
    @given(body=bodies)
    async def test_introspect(self, client: httpx.AsyncClient, body: bytes) -> None:
        headers = {**GATEWAY_HEADERS, "Content-Type": "application/json"}
        response = await client.post("/betlink/sessions/introspect", headers=headers, content=body)
        _shape_ok(response, betlink=False)

    @FUZZ
    @given(user_id=header_values)
    async def test_session_user_id_header(self, client: httpx.AsyncClient, user_id: bytes) -> None:
        headers = [(b"authorization", GATEWAY_HEADERS["Authorization"].encode()), (b"x-user-id", user_id)]
        response = await client.post("/betlink/session", headers=headers)
        _shape_ok(response, betlink=False)

    @FUZZ
    @given(user_id=st.text(min_size=1, max_size=140))
    async def test_block_path(self, client: httpx.AsyncClient, user_id: str) -> None:
        from urllib.parse import quote

        response = await client.put(f"/players/{quote(user_id, safe='')}/block", headers=GATEWAY_HEADERS)
        assert response.status_code < 500, response.text

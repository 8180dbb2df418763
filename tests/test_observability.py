"""Logs, request ids, metrics, overload and body limits."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from prometheus_client.parser import text_string_to_metric_families

from partner_gateway.db import Database
from partner_gateway.logs import REDACTED, Redactor, configure_logging, redactor
from tests.conftest import BETLINK_KEY, ENCRYPTION_KEY, GATEWAY_HEADERS, GATEWAY_KEY, app_of
from tests.helpers import auth_headers, authenticate, launch

BIDPAW_URL = "https://bidpaw.test"
BIDPAW_SECRET = "bidpaw-secret-value"


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Configure the service's JSON logging at DEBUG into a buffer; parse every line written since."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=buffer)
    redactor.register([GATEWAY_KEY, BETLINK_KEY, ENCRYPTION_KEY])

    def lines() -> list[dict[str, Any]]:
        out = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    yield lines
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


class TestLogs:
    async def test_a_full_flow_logs_json_with_request_ids_and_no_secrets(
        self, make_client: Callable[..., Any], json_logs: Callable[[], list[dict[str, Any]]]
    ) -> None:
        bidpaw = {
            "bidpaw_api_url": BIDPAW_URL,
            "bidpaw_client_id": "casino-1",
            "bidpaw_secret_key": BIDPAW_SECRET,
            "bidpaw_game_id": "game-1",
        }
        client = await make_client(**bidpaw)
        redactor.register([BIDPAW_SECRET])
        secrets = [
            GATEWAY_KEY,
            BETLINK_KEY,
            ENCRYPTION_KEY,
            BIDPAW_SECRET,
            "iframe-token-xyz",
            "iframe-session",
        ]
        session = await launch(client)
        key = str(uuid.uuid4())
        answer = (await authenticate(client, session, key=key)).json()
        await authenticate(client, session, key=key)  # replay
        await authenticate(client, session)  # rejection: token used
        await client.post("/betlink/session", headers={"X-User-Id": "p"})  # 401
        with respx.mock(assert_all_called=True) as mock:
            route = mock.get(url__startswith=f"{BIDPAW_URL}/api/casino/open-session/")
            route.side_effect = [
                httpx.Response(
                    200, json={"iframeURL": f"{BIDPAW_URL}/lobby?token=iframe-token-xyz&s=iframe-session"}
                ),
                httpx.Response(500, text="upstream trace with iframe-token-xyz"),
            ]
            headers = {**GATEWAY_HEADERS, "X-User-Id": "player-1"}
            ok = await client.get("/bidpaw/open-session", params={"nick": "Jöhn"}, headers=headers)
            failed = await client.get("/bidpaw/open-session", headers=headers)
            signs = [call.request.headers["sign"] for call in route.calls]
        assert (ok.status_code, failed.status_code) == (200, 502)
        secrets += [session["launchToken"], answer["operatorSessionToken"], *signs]

        lines = json_logs()
        raw = json.dumps(lines)
        for secret in secrets:
            assert secret not in raw
        events = [line["event"] for line in lines]
        for expected in ("betlink.session_issued", "betlink.authenticated", "betlink.replayed"):
            assert expected in events
        rejected = [line for line in lines if line["event"] == "betlink.auth_rejected"]
        assert [line["error_code"] for line in rejected] == ["INVALID_SESSION"]
        bidpaw_lines = [line for line in lines if line["event"] == "bidpaw.open_session"]
        assert [line["outcome"] for line in bidpaw_lines] == ["ok", "server_error"]
        access = [line for line in lines if line["event"] == "http.request"]
        assert len(access) == 7
        assert {line["route"] for line in access} == {
            "/betlink/session",
            "/betlink/authenticate",
            "/bidpaw/open-session",
        }
        assert all(line["level"] == "info" and "duration_ms" in line for line in access)
        request_lines = [line for line in lines if line.get("logger", "").startswith("partner_gateway")]
        assert all("request_id" in line for line in request_lines)
        assert len({line["request_id"] for line in access}) == 7
        for line in request_lines:  # every line of a request carries that request's id
            assert line["request_id"] in {a["request_id"] for a in access}

    async def test_every_line_of_a_request_carries_its_id(
        self, client: httpx.AsyncClient, json_logs: Callable[[], list[dict[str, Any]]]
    ) -> None:
        json_logs()
        response = await client.post(
            "/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "p", "X-Request-ID": "trace-abc.1"}
        )
        assert response.headers["x-request-id"] == "trace-abc.1"
        lines = json_logs()
        assert lines
        assert {line.get("request_id") for line in lines} == {"trace-abc.1"}

    async def test_request_id_is_generated_when_absent_or_unsafe(self, client: httpx.AsyncClient) -> None:
        plain = await client.get("/healthz")
        assert len(plain.headers["x-request-id"]) == 32
        unsafe = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


class TestRedactor:
    def test_masks_secret_keys_urls_and_registered_values(self) -> None:
        redactor = Redactor()
        redactor.register(["s3cr3t-value"])
        event = {
            "event": "calling https://bidpaw.example/auctions?token=abc&session=def now",
            "sign": "deadbeef",
            "operatorSessionToken": "tok",
            "headers": {"Authorization": "Bearer x", "accept": "json"},
            "note": "the key is s3cr3t-value",
        }
        cleaned = redactor(None, "info", event)
        assert cleaned["event"] == f"calling https://bidpaw.example/auctions?{REDACTED} now"
        assert cleaned["sign"] == REDACTED
        assert cleaned["operatorSessionToken"] == REDACTED
        assert cleaned["headers"] == {"Authorization": REDACTED, "accept": "json"}
        assert cleaned["note"] == f"the key is {REDACTED}"


class TestMetrics:
    async def test_series_with_route_templates_after_traffic(self, client: httpx.AsyncClient) -> None:
        session = await launch(client)
        await authenticate(client, session)
        await authenticate(client, session)
        await client.put("/players/someone/block", headers=GATEWAY_HEADERS)
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }
        names = {name for name, _ in samples}

        def labels(**values: str) -> tuple[tuple[str, str], ...]:
            return tuple(sorted(values.items()))

        assert (
            samples[
                (
                    "partner_gateway_http_requests_total",
                    labels(method="POST", route="/betlink/session", status="201"),
                )
            ]
            >= 1
        )
        assert (
            "partner_gateway_http_requests_total",
            labels(method="PUT", route="/players/{userId}/block", status="204"),
        ) in samples
        assert "partner_gateway_http_request_duration_seconds_bucket" in names
        assert samples[("partner_gateway_betlink_auth_total", labels(outcome="AUTHENTICATED"))] >= 1
        assert samples[("partner_gateway_betlink_auth_total", labels(outcome="INVALID_SESSION"))] >= 1
        assert ("partner_gateway_db_pool_in_use", ()) in samples
        assert ("partner_gateway_db_pool_idle", ()) in samples
        assert any(name == "partner_gateway_build_info" for name in names)
        assert not any("someone" in str(key) for key in samples)


class TestOverload:
    async def test_pool_exhaustion_answers_fast_503s(self, make_client: Callable[..., Any]) -> None:
        client = await make_client(db_pool_size=1, db_max_overflow=0, db_timeout_seconds=1)
        session = await launch(client)
        database: Database = app_of(client).state.database
        async with database.statement():  # a slow request holding the pool's only connection
            started = time.monotonic()
            queued_session, queued_auth = await asyncio.gather(
                client.post("/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "p"}),
                authenticate(client, session),
            )
            elapsed = time.monotonic() - started
        assert queued_session.status_code == 503
        assert queued_session.headers["content-type"] == "application/problem+json"
        assert queued_auth.status_code == 503
        assert queued_auth.json()["errorCode"] == "REQUEST_TIMED_OUT"
        assert elapsed < 2.5
        assert (await authenticate(client, session)).status_code == 200  # recovered by itself


class TestBodyLimit:
    async def test_oversize_body_is_413_problem(self, make_client: Callable[..., Any]) -> None:
        client = await make_client(max_body_bytes=1024)
        response = await client.post(
            "/betlink/sessions/introspect", headers=GATEWAY_HEADERS, json={"operatorSessionToken": "x" * 5000}
        )
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"

    async def test_oversize_body_on_authenticate_keeps_betlinks_shape(
        self, make_client: Callable[..., Any]
    ) -> None:
        client = await make_client(max_body_bytes=1024)
        response = await client.post("/betlink/authenticate", headers=auth_headers(), content=b"x" * 5000)
        assert response.status_code == 400
        assert response.json()["errorCode"] == "MISSING_PARAMETER"

    async def test_streamed_body_without_length_is_limited_too(self, make_client: Callable[..., Any]) -> None:
        client = await make_client(max_body_bytes=1024)

        async def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 512

        response = await client.post(
            "/betlink/sessions/introspect",
            headers={**GATEWAY_HEADERS, "Content-Type": "application/json"},
            content=chunks(),
        )
        assert response.status_code == 413


class TestUnexpectedErrors:
    async def test_a_500_carries_the_request_id_in_its_header_and_log_line(
        self,
        client: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch,
        json_logs: Callable[[], list[dict[str, Any]]],
    ) -> None:
        from partner_gateway.betlink import service

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(service, "issue_launch_token", broken)
        json_logs()
        response = await client.post(
            "/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "p", "X-Request-ID": "req-500"}
        )
        assert response.status_code == 500
        assert response.headers["x-request-id"] == "req-500"
        assert response.json() == {
            "type": "about:blank",
            "title": "Internal Server Error",
            "status": 500,
            "detail": "unexpected error",
        }
        lines = json_logs()
        errors = [line for line in lines if line["level"] == "error"]
        assert errors
        assert all(line["request_id"] == "req-500" for line in errors)
        assert any("RuntimeError" in line.get("exception", "") for line in errors)


class TestBoundedLabels:
    async def test_a_method_outside_the_standard_set_is_counted_as_other(
        self, client: httpx.AsyncClient
    ) -> None:
        for method in ("FOO", "BREW", "X" * 40):
            await client.request(method, "/healthz")
        response = await client.get("/metrics")
        methods = {
            sample.labels["method"]
            for family in text_string_to_metric_families(response.text)
            if family.name == "partner_gateway_http_requests"
            for sample in family.samples
        }
        assert "OTHER" in methods
        assert methods <= {
            "GET",
            "HEAD",
            "POST",
            "PUT",
            "DELETE",
            "CONNECT",
            "OPTIONS",
            "TRACE",
            "PATCH",
            "OTHER",
        }

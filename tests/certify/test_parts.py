"""The certify parts that need no deployment: success-body rules, masking, figures, reports."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from partner_gateway.certify import report, runner
from partner_gateway.certify.checks import CHECKS
from partner_gateway.certify.client import MASK, Secrets, describe, parse_response
from partner_gateway.certify.expectations import percentiles, success_fields
from partner_gateway.certify.runner import Cleanup, PacedTransport, Result, Run

SENT = {"requestId": "5a7c3f1e-0000-4000-8000-000000000001", "userId": "u1", "operatorId": "op"}
TOKEN = "T" * 43


def _success(**changes: Any) -> httpx.Response:
    now = int(time.time() * 1000)
    body: dict[str, Any] = {
        **SENT,
        "operatorSessionToken": TOKEN,
        "timestamp": str(now),
        "status": "AUTHENTICATED",
        "sessionExpiry": str(now + 1_800_000),
        "redirectUrl": "https://casino.example/",
    }
    body.update(changes)
    return httpx.Response(200, json={k: v for k, v in body.items() if v is not None})


class TestSuccessFields:
    def test_accepts_the_contracts_body(self) -> None:
        assert success_fields(SENT, _success()) == []

    @pytest.mark.parametrize(
        ("changes", "wrong"),
        [
            ({"redirectUrl": None}, "field set"),
            ({"extra": "x"}, "field set"),
            ({"timestamp": 1}, "timestamp a string"),
            ({"requestId": "5a7c3f1e-0000-4000-8000-000000000002"}, "requestId echoed"),
            ({"status": "OK"}, "status AUTHENTICATED"),
            ({"operatorSessionToken": "short"}, "operatorSessionToken URL-safe, at least 256 bits"),
            ({"operatorSessionToken": "+" * 43}, "operatorSessionToken URL-safe, at least 256 bits"),
            ({"sessionExpiry": "soon"}, "timestamp and sessionExpiry epoch milliseconds"),
            ({"timestamp": "1000", "sessionExpiry": "1801000"}, "timestamp within 5 minutes"),
            (
                {"sessionExpiry": str(int(time.time() * 1000) + 3_600_000)},
                "sessionExpiry = timestamp + 1800 s",
            ),
            ({"redirectUrl": "/home"}, "redirectUrl an absolute URL"),
        ],
    )
    def test_names_what_is_wrong(self, changes: dict[str, Any], wrong: str) -> None:
        found = success_fields(SENT, _success(**changes))
        assert any(item.startswith(wrong) for item in found), found


class TestMasking:
    def test_token_fields_are_masked_in_a_described_answer(self) -> None:
        shown = describe(httpx.Response(200, json={"launchToken": "abcdefgh", "userId": "u1"}))
        assert shown == f'200 application/json {{"launchToken": "{MASK}", "userId": "u1"}}'

    def test_every_secret_met_is_cut_out_and_an_iframe_query_too(self) -> None:
        secrets = Secrets(["gw-key-123456"])
        secrets.add("https://bidpaw.example/lobby?token=zyxwvut")
        secrets.add("short")  # too short to be a key: not masked (it would garble the text)
        text = "Bearer gw-key-123456 opened https://bidpaw.example/lobby?token=zyxwvut; ?token=zyxwvut short"
        assert secrets.mask(text) == f"Bearer {MASK} opened {MASK}; ?{MASK} short"


class TestPercentiles:
    def test_nearest_rank_in_milliseconds(self) -> None:
        figures = percentiles([0.001 * n for n in range(1, 101)])
        assert figures == {"requests": 100, "p50_ms": 50.0, "p99_ms": 99.0}

    def test_a_small_batch(self) -> None:
        assert percentiles([0.003, 0.001, 0.002]) == {"requests": 3, "p50_ms": 2.0, "p99_ms": 3.0}


def _run() -> Run:
    results = (
        Result(CHECKS[0], True, 0.012),
        Result(CHECKS[1], False, 0.020, expected="400 <MISSING_PARAMETER>", actual='403 {"a": "&"}'),
    )
    cleanup = Cleanup(True, "cleanup: player certify-x unblocked")
    return Run("http://gw", "certify-x", datetime(2026, 12, 2, tzinfo=UTC), 1.5, results, cleanup)


class TestReports:
    def test_the_table_shows_expected_and_actual_under_a_failure(self) -> None:
        lines = report.table(_run()).splitlines()
        assert lines[2].split()[:2] == ["PASS", CHECKS[0].id]
        assert lines[3].split()[:2] == ["FAIL", CHECKS[1].id]
        assert lines[4].split(None, 1) == ["expected:", "400 <MISSING_PARAMETER>"]
        assert lines[5].split(None, 1) == ["actual:", '403 {"a": "&"}']
        assert lines[-3:] == [
            "1 passed, 1 failed, 0 skipped in 1.5 s",
            "cleanup: player certify-x unblocked",
            "CERTIFY FAILED",
        ]

    def test_junit_escapes_and_parses(self) -> None:
        suite = ET.fromstring(report.junit(_run())).find("testsuite")
        assert suite is not None
        assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
        failure = suite.find(f"testcase[@name='{CHECKS[1].id}']/failure")
        assert failure is not None
        assert failure.get("message") == "expected: 400 <MISSING_PARAMETER>"
        assert failure.text == 'expected: 400 <MISSING_PARAMETER>\nactual: 403 {"a": "&"}'

    def test_json(self) -> None:
        document = json.loads(report.as_json(_run()))
        assert document["passed"] is False
        assert [c["status"] for c in document["checks"]] == ["PASS", "FAIL"]
        assert document["checks"][1]["actual"] == '403 {"a": "&"}'


class TestRawAnswers:
    """The parallel-keys race reads its answers off raw sockets (certify's `Deployment.race`)."""

    def test_content_length(self) -> None:
        raw = (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}extra"
        )
        answer = parse_response(raw)
        assert (answer.status_code, answer.content, answer.headers["content-type"]) == (
            401,
            b"{}",
            "application/json",
        )

    def test_chunked(self) -> None:
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
        assert parse_response(raw).content == b"abcde"

    def test_not_http(self) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            parse_response(b"")


class TestSkipped:
    def test_a_skipped_check_says_why_everywhere_and_does_not_fail_the_run(self) -> None:
        why = "--session-ttl not given: session-token expiry not checked"
        results = (Result(CHECKS[0], True, 0.0, skipped=why),)
        run = Run(
            "http://gw", "p", datetime(2026, 12, 2, tzinfo=UTC), 0.1, results, Cleanup(True, "cleanup: ok")
        )
        assert run.passed
        lines = report.table(run).splitlines()
        assert lines[2].split()[:2] == ["SKIP", CHECKS[0].id]
        assert lines[3].split(None, 2) == ["not", "checked:", why]
        assert "0 passed, 0 failed, 1 skipped" in lines[-3]
        skipped = ET.fromstring(report.junit(run)).find("testsuite/testcase/skipped")
        assert skipped is not None
        assert skipped.get("message") == why
        assert json.loads(report.as_json(run))["checks"][0] == {
            "id": CHECKS[0].id,
            "title": CHECKS[0].title,
            "status": "SKIP",
            "seconds": 0.0,
            "expected": None,
            "actual": None,
            "skipped": why,
        }


class TestPacedTransport:
    """certify runs from one address through the shipped nginx, whose per-address limit may say
    429: the request never reached the service, so it is sent again after a pause (a check that
    failed on a 429 once made the broken-proxy test of test_proxy.py flaky)."""

    async def test_a_429_is_sent_again_and_the_service_answer_returned(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(runner, "RATE_LIMITED_PAUSE_SECONDS", 0.0)
        statuses = iter([429, 429, 201])
        seen: list[bytes] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request.content)
            return httpx.Response(next(statuses))

        transport = PacedTransport(httpx.MockTransport(answer))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            response = await client.post("/betlink/session", content=b"body")
        assert response.status_code == 201
        assert seen == [b"body"] * 3

    async def test_a_limit_that_never_lifts_is_answered_as_it_is(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(runner, "RATE_LIMITED_PAUSE_SECONDS", 0.0)
        transport = PacedTransport(httpx.MockTransport(lambda request: httpx.Response(429)))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            assert (await client.get("/healthz")).status_code == 429

"""The certify parts that need no deployment: success-body rules, masking, figures, reports."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from partner_gateway.certify import report
from partner_gateway.certify.checks import CHECKS, percentiles, success_fields
from partner_gateway.certify.client import MASK, Secrets, describe
from partner_gateway.certify.runner import Cleanup, Result, Run

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
                "sessionExpiry = timestamp + 30 minutes",
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

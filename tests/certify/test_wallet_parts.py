"""`certify --bidpaw-wallet`'s parts that need no deployment: its signing, its answers, SKIP lines."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from partner_gateway.bidpaw.signing import Pairs, callback_signatures
from partner_gateway.certify import report
from partner_gateway.certify.client import Failed
from partner_gateway.certify.runner import Cleanup, Result, Run
from partner_gateway.certify.wallet_checks import WALLET_CHECKS, expect_code, sign

PARAMS = {
    "method": "charge",
    "userId": "certify-1f2e3d4c",
    "clientId": "casino-1",
    "gameId": "game-1",
    "sessionId": "Zx81mQ-0a1b2c",
    "amount": 1,
    "currency": "EUR",
    "transactionId": "certify-0a1b2c3d-done-9f8e7d6c",
}


class TestSigning:
    @pytest.mark.parametrize(
        "params",
        [PARAMS, {name: str(value) for name, value in PARAMS.items()}, {**PARAMS, "userId": "jürgen ✓"}],
    )
    def test_certify_signs_as_the_service_verifies(self, params: dict[str, Any]) -> None:
        """Two implementations (certify's own, and the service's from BidPaw's sample) agree."""
        assert (
            sign(params, "cb-secret")
            == callback_signatures(params=Pairs(params.items()), secrets=["cb-secret"])[0]
        )


class TestAnswers:
    def test_exactly_the_codes_shape(self) -> None:
        good = httpx.Response(200, json={"errorCode": 5, "errorDescription": "Duplicate transaction"})
        expect_code(good, 5, "a duplicate")
        for wrong in (
            httpx.Response(200, json={"errorCode": 5, "errorDescription": "Duplicate"}),
            httpx.Response(200, json={"errorCode": 5, "errorDescription": "Duplicate transaction", "x": 1}),
            httpx.Response(400, json={"errorCode": 5, "errorDescription": "Duplicate transaction"}),
            httpx.Response(200, text='{"errorCode": 5, "errorDescription": "Duplicate transaction"}'),
        ):
            with pytest.raises(Failed):
                expect_code(wrong, 5, "a duplicate")

    def test_the_checks_are_one_group(self) -> None:
        assert {check.group for check in WALLET_CHECKS} == {"bidpaw-wallet"}
        assert len({check.id for check in WALLET_CHECKS}) == len(WALLET_CHECKS)


def _run() -> Run:
    results = (
        Result(WALLET_CHECKS[0], True, 0.010),
        Result(WALLET_CHECKS[-1], True, 0.001, skipped="--wallet-sandbox-url not given: code 7 not checked"),
    )
    cleanup = Cleanup(True, "cleanup: player certify-x unblocked")
    return Run("http://gw", "certify-x", datetime(2026, 12, 3, tzinfo=UTC), 1.5, results, cleanup)


class TestSkippedIsShownNeverPassed:
    def test_table(self) -> None:
        lines = report.table(_run()).splitlines()
        assert lines[3].split()[:2] == ["SKIP", WALLET_CHECKS[-1].id]
        assert lines[4].strip() == "not checked: --wallet-sandbox-url not given: code 7 not checked"
        assert "1 passed, 0 failed, 1 skipped in 1.5 s" in lines

    def test_json_and_junit(self) -> None:
        checks = json.loads(report.as_json(_run()))["checks"]
        assert [c["status"] for c in checks] == ["PASS", "SKIP"]
        assert checks[1]["skipped"].startswith("--wallet-sandbox-url not given")
        suite = ET.fromstring(report.junit(_run())).find("testsuite")
        assert suite is not None
        assert suite.get("skipped") == "1"
        assert suite.find(f"testcase[@name='{WALLET_CHECKS[-1].id}']/skipped") is not None

"""`partner-gateway certify` passes against the real service and fails exactly the broken check.

Three real processes for the module: the BidPaw sandbox, `partner-gateway serve`, and the service
wrapped in `tests/certify/faults.py` (one fault per run, chosen by a header of the run's client).
Launch tokens live 2 s, so the expired-token check waits about 2.5 s per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from partner_gateway.certify import report
from partner_gateway.certify.checks import CHECKS
from partner_gateway.certify.client import Options
from partner_gateway.certify.runner import Run, certify
from tests.certify.conftest import record_timing
from tests.certify.faults import AFTER_FAULTS
from tests.conftest import BETLINK_KEY, GATEWAY_KEY
from tests.processes import bidpaw_sandbox, free_port, serve, service_environment, wait_listening, wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TTL = "2"
BIDPAW_CLIENT_ID, BIDPAW_SECRET = "casino-certify", "sandbox-secret-certify"
ALL_IDS = [check.id for check in CHECKS]
LONG_TOKEN = re.compile(r"[A-Za-z0-9_-]{40,}")  # an operatorSessionToken is 43 such characters
PARALLEL_RUNS = 6
PROCESS_TIMEOUT = 120


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def deployments(database_url: str) -> Iterator[tuple[str, str]]:
    """The URLs of the real service and of the broken one, both on one BidPaw sandbox."""
    started = time.perf_counter()
    sandbox_port, real_port, broken_port = free_port(), free_port(), free_port()
    bidpaw_url = f"http://127.0.0.1:{sandbox_port}"
    settings = {
        "BETLINK_LAUNCH_TOKEN_TTL_SECONDS": TTL,
        "BIDPAW_API_URL": bidpaw_url,
        "BIDPAW_CLIENT_ID": BIDPAW_CLIENT_ID,
        "BIDPAW_SECRET_KEY": BIDPAW_SECRET,
        "BIDPAW_GAME_ID": "game-certify",
    }
    procs = [
        bidpaw_sandbox(sandbox_port, client_id=BIDPAW_CLIENT_ID, secret_key=BIDPAW_SECRET),
        serve(
            database_url,
            real_port,
            BETLINK_LAUNCH_TOKEN_TTL_SECONDS=TTL,
            BIDPAW_API_URL=bidpaw_url,
            BIDPAW_CLIENT_ID=BIDPAW_CLIENT_ID,
            BIDPAW_SECRET_KEY=BIDPAW_SECRET,
            BIDPAW_GAME_ID="game-certify",
        ),
        subprocess.Popen(
            [sys.executable, "-m", "tests.certify.faults", str(broken_port)],
            env=service_environment(database_url, **settings),
            cwd=ROOT,
        ),
    ]
    try:
        wait_listening(bidpaw_url, procs[0])
        real, broken = f"http://127.0.0.1:{real_port}", f"http://127.0.0.1:{broken_port}"
        wait_ready(real, procs[1])
        wait_ready(broken, procs[2])
        record_timing("three processes ready", started)
        yield real, broken
    finally:
        for proc in procs:
            _stop(proc)


def _certify(url: str, *args: str) -> subprocess.Popen[str]:
    """The command as an operator runs it: keys from GATEWAY_API_KEYS/BETLINK_API_KEYS, no DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    env.update(GATEWAY_API_KEYS=f"{GATEWAY_KEY},other-key", BETLINK_API_KEYS=BETLINK_KEY)
    command = [sys.executable, "-m", "partner_gateway", "certify", "--url", url, "--launch-token-ttl", TTL]
    return subprocess.Popen(
        [*command, "--bidpaw", "--parallel-same-key", "4", "--parallel-keys", "4", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def real_runs(deployments: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    """Two runs at once against `serve`: the table with --junit FILE, and --json."""
    started = time.perf_counter()
    junit = tmp_path_factory.mktemp("certify") / "certify.xml"
    procs = {
        "table": _certify(
            deployments[0], "--junit", str(junit), "--bidpaw-iframe-prefix", "https://sandbox.bidpaw.invalid/"
        ),
        "json": _certify(deployments[0], "--json", "--player", "certify-json-player"),
    }
    finished = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=PROCESS_TIMEOUT)
        finished[name] = Finished(proc.returncode, stdout, stderr)
    finished["junit"] = Finished(0, junit.read_text() if junit.exists() else "", "")
    record_timing("two certify runs against serve", started)
    return finished


def _assert_no_secret(text: str) -> None:
    for secret in (GATEWAY_KEY, BETLINK_KEY, BIDPAW_SECRET):
        assert secret not in text
    assert not LONG_TOKEN.search(text), LONG_TOKEN.search(text)


class TestAgainstTheRealService:
    def test_every_check_passes_and_the_junit_file_parses(self, real_runs: dict[str, Finished]) -> None:
        done, junit = real_runs["table"], real_runs["junit"].stdout
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert [line.split()[:2] for line in lines if line.startswith(("PASS", "FAIL"))] == [
            ["PASS", check_id] for check_id in ALL_IDS
        ]
        assert re.search(r"^cleanup: player certify-[0-9a-f]{8} unblocked", done.stdout, re.M)
        assert lines[-1] == "CERTIFY PASSED"
        suite = ET.fromstring(junit).find("testsuite")
        assert suite is not None
        assert (suite.get("tests"), suite.get("failures")) == (str(len(CHECKS)), "0")
        assert [case.get("name") for case in suite.iter("testcase")] == ALL_IDS
        assert not list(suite.iter("failure"))
        _assert_no_secret(done.stdout + done.stderr + junit)

    def test_json_reports_every_check_with_its_time(self, real_runs: dict[str, Finished]) -> None:
        done = real_runs["json"]
        assert done.returncode == 0, done.stdout + done.stderr
        document = json.loads(done.stdout)
        assert (document["passed"], document["player"]) == (True, "certify-json-player")
        assert [(c["id"], c["status"]) for c in document["checks"]] == [(i, "PASS") for i in ALL_IDS]
        assert all(c["seconds"] >= 0 for c in document["checks"])
        parallel = {c["id"]: c["latency"] for c in document["checks"] if "latency" in c}
        assert set(parallel) == {"idempotency.parallel_same_key", "idempotency.parallel_keys"}
        assert all(
            figures["requests"] == 4 and figures["p99_ms"] >= figures["p50_ms"] > 0
            for figures in parallel.values()
        )
        assert document["cleanup"]["done"] is True
        _assert_no_secret(done.stdout + done.stderr)


class TestWithoutKeys:
    def test_names_the_missing_key_and_exits_2(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEYS", "_KEY", "DATABASE_URL"))}
        command = [sys.executable, "-m", "partner_gateway", "certify", "--url", "http://127.0.0.1:9"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
        assert done.returncode == 2
        assert "--gateway-key or CERTIFY_GATEWAY_KEY or GATEWAY_API_KEYS" in done.stderr
        assert "--betlink-key or CERTIFY_BETLINK_KEY or BETLINK_API_KEYS" in done.stderr


def _faults() -> list[str]:
    return [
        *AFTER_FAULTS,
        "auth.api_key",
        "auth.operator_id",
        "auth.repeated_headers",
        "auth.expired_token",
        "bidpaw.repeated_player_headers",
    ]


class TestEachFaultFailsExactlyItsCheck:
    def test_every_check_has_a_fault(self) -> None:
        assert sorted(_faults()) == sorted(ALL_IDS)

    async def test_a_broken_deployment_fails_only_the_check_its_fault_breaks(
        self, deployments: tuple[str, str]
    ) -> None:
        started = time.perf_counter()
        gate = asyncio.Semaphore(PARALLEL_RUNS)

        async def run(fault: str) -> Run:
            async with (
                gate,
                httpx.AsyncClient(
                    base_url=deployments[1], headers={"X-Certify-Fault": fault}, timeout=10
                ) as http,
            ):
                options = Options(
                    player=f"certify-fault-{fault}",
                    launch_token_ttl=float(TTL),
                    bidpaw=True,
                    parallel_same_key=3,
                    parallel_keys=3,
                )
                return await certify(
                    deployments[1],
                    gateway_key=GATEWAY_KEY,
                    betlink_key=BETLINK_KEY,
                    options=options,
                    http=http,
                )

        runs = dict(zip(_faults(), await asyncio.gather(*(run(fault) for fault in _faults())), strict=True))
        record_timing(f"{len(runs)} fault runs, {PARALLEL_RUNS} at a time", started)
        failed = {fault: [r.check.id for r in run.results if not r.passed] for fault, run in runs.items()}
        assert failed == {fault: [fault] for fault in runs}, {
            fault: [(r.check.id, r.expected, r.actual) for r in run.results if not r.passed]
            for fault, run in runs.items()
            if failed[fault] != [fault]
        }
        # A DELETE that is not idempotent also defeats the final unblock, and the run says so.
        assert {fault for fault, run in runs.items() if not run.cleanup.done} == {"wallet.unblock"}
        assert "cleanup FAILED" in runs["wallet.unblock"].cleanup.message
        for broken in runs.values():
            assert not broken.passed
            _assert_no_secret(report.table(broken) + report.as_json(broken) + report.junit(broken))

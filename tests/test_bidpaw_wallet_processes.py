"""/bidpaw/wallet over real sockets: two `serve` processes, the sandbox wallet, the shared database.

Every row of the code table; 30 simultaneous callbacks with one transactionId over both
processes; SIGTERM with callbacks in flight. Each test is bounded and prints its timing.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import GATEWAY_HEADERS, PROCESS_TIMINGS
from tests.processes import (
    free_port,
    service_environment,
    timed_with,
    wait_listening,
    wait_ready,
    wallet_sandbox,
)
from tests.system import require_programs
from tests.wallet_helpers import (
    WALLET_SECRET,
    answer,
    open_bidpaw_session,
    params,
    sign_params,
    signed_get,
    signed_post,
    wallet_environment,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 2.0
WALLET_TIMEOUT = 1.5


def note(line: str) -> None:
    PROCESS_TIMINGS.append(f"[wallet] {line}")
    print(f"[wallet] {line}", file=sys.stderr)  # noqa: T201


# How long a block took: on stderr now, in the run's summary at the end.
timed = functools.partial(timed_with, note)


@dataclass
class Deployment:
    services: list[str]
    procs: list[subprocess.Popen[bytes]]
    wallet: str
    env: dict[str, str]

    async def faults(self, **faults: Any) -> None:
        async with httpx.AsyncClient() as client:
            if faults:
                response = await client.put(f"{self.wallet}/_sandbox/faults", json=faults)
            else:
                response = await client.delete(f"{self.wallet}/_sandbox/faults")
            assert response.status_code == 200, response.text

    async def operations(self, transaction_id: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            book = (await client.get(f"{self.wallet}/_sandbox/ledger")).json()
        return [op for op in book["operations"] if op["partnerTransactionId"] == transaction_id]


def start_service(env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    command = [sys.executable, "-m", "partner_gateway", "serve", "--port", str(port)]
    proc = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url, proc


@pytest.fixture(scope="module")
def deployment(database_url: str) -> Iterator[Deployment]:
    wallet_port = free_port()
    wallet_url = f"http://127.0.0.1:{wallet_port}"
    env = service_environment(
        database_url,
        **wallet_environment(
            wallet_url,
            BIDPAW_WALLET_DEADLINE_SECONDS=str(DEADLINE),
            WALLET_TIMEOUT_SECONDS=str(WALLET_TIMEOUT),
        ),
    )
    procs: list[subprocess.Popen[bytes]] = []
    with timed("start: sandbox wallet and two services"):
        wallet = wallet_sandbox(wallet_port, secrets=WALLET_SECRET)
        procs.append(wallet)
        try:
            wait_listening(f"{wallet_url}/_sandbox/faults", wallet)
            services = []
            for _ in range(2):
                url, proc = start_service(env)
                services.append(url)
                procs.append(proc)
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
    try:
        yield Deployment(services=services, procs=procs[1:], wallet=wallet_url, env=env)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


@pytest.fixture
async def live(deployment: Deployment, engine: AsyncEngine) -> AsyncIterator[Deployment]:
    await deployment.faults()
    await open_bidpaw_session(engine)
    yield deployment
    await deployment.faults()


async def call(url: str, values: dict[str, Any], **overrides: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=DEADLINE + 5) as client:
        return await client.post(f"{url}/bidpaw/wallet", **(overrides or signed_post(values)))


class TestEveryCodeOverARealSocket:
    async def test_0_done_and_its_replay_byte_for_byte_on_the_other_process(self, live: Deployment) -> None:
        values = params()
        first = await call(live.services[0], values)
        replay = await call(live.services[1], values)
        assert first.status_code == 200
        assert first.headers["content-type"] == "application/json"
        assert first.content == replay.content == b'{"errorCode":0,"errorDescription":""}'
        [debit] = await live.operations(values["transactionId"])
        assert (debit["kind"], debit["state"], debit["net"]) == ("debit", "applied", -250)

    async def test_0_over_get(self, live: Deployment) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{live.services[0]}/bidpaw/wallet", **signed_get(params("credit")))
        assert response.json() == answer(0)

    async def test_1_not_enough_balance(self, live: Deployment) -> None:
        await live.faults(insufficient_funds=True)
        assert (await call(live.services[0], params())).json() == answer(1)

    async def test_2_player_blocked(self, live: Deployment) -> None:
        async with httpx.AsyncClient() as client:
            blocked = await client.put(f"{live.services[0]}/players/player-1/block", headers=GATEWAY_HEADERS)
        assert blocked.status_code == 204
        values = params()
        assert (await call(live.services[1], values)).json() == answer(2)
        assert await live.operations(values["transactionId"]) == []

    async def test_3_unknown_session(self, live: Deployment) -> None:
        assert (await call(live.services[0], params(sessionId="other"))).json() == answer(3)

    async def test_4_invalid_request(self, live: Deployment) -> None:
        assert (await call(live.services[0], params(amount=0))).json() == answer(4)

    async def test_5_duplicate_transaction(self, live: Deployment) -> None:
        values = params()
        assert (await call(live.services[0], values)).json() == answer(0)
        assert (await call(live.services[1], {**values, "amount": 999})).json() == answer(5)

    async def test_6_invalid_signature(self, live: Deployment) -> None:
        values = params()
        forged = {"content": b'{"method":"charge"}', "headers": {"sign": sign_params(values)}}
        assert (await call(live.services[0], values, **forged)).json() == answer(6)

    async def test_7_refused_by_the_wallet(self, live: Deployment) -> None:
        await live.faults(refuse_rate=1.0)
        assert (await call(live.services[0], params())).json() == answer(7)

    async def test_8_wallet_too_slow_then_the_debit_is_reversed(self, live: Deployment) -> None:
        await live.faults(slow_seconds=WALLET_TIMEOUT + 0.5, slow_phase="after")
        values = params()
        with timed("a charge past the wallet's timeout"):
            assert (await call(live.services[0], values)).json() == answer(8)
        await live.faults()
        await asyncio.to_thread(reconcile, live.env)
        operations = {op["kind"]: op for op in await live.operations(values["transactionId"])}
        assert (operations["debit"]["state"], operations["debit"]["net"]) == ("reversed", 0)
        assert operations["reverse"]["state"] == "applied"

    async def test_9_in_progress_when_the_first_cannot_finish_in_the_deadline(
        self, live: Deployment, engine: AsyncEngine
    ) -> None:
        await live.faults(slow_seconds=0.8)  # before the ledger: the recording is visible meanwhile
        values = params()
        first = asyncio.create_task(call(live.services[0], values))
        async with engine.connect() as conn:
            # The first request's answer cannot be written while this lock is held.
            for _ in range(100):
                await asyncio.sleep(0.05)
                await conn.rollback()
                locked = (await conn.execute(text("SELECT 1 FROM wallet_transactions FOR UPDATE"))).all()
                if locked:
                    break
            duplicate = await call(live.services[1], values)
            answered = await first
            await conn.rollback()
        assert duplicate.json() == answer(9)
        assert answered.json() == answer(9)


def reconcile(env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "partner_gateway", "reconcile"]
    subprocess.run(command, env=env, check=True, timeout=120)


class TestDuplicates:
    async def test_30_simultaneous_callbacks_over_two_processes_make_one_debit_and_one_answer(
        self, live: Deployment
    ) -> None:
        await live.faults(slow_seconds=0.5)
        values = params()
        with timed("30 simultaneous callbacks, one transactionId"):
            async with httpx.AsyncClient(timeout=DEADLINE + 5) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(f"{live.services[n % 2]}/bidpaw/wallet", **signed_post(values))
                        for n in range(30)
                    )
                )
        assert {response.content for response in responses} == {b'{"errorCode":0,"errorDescription":""}'}
        assert len(await live.operations(values["transactionId"])) == 1


class TestShutdown:
    async def test_sigterm_answers_callbacks_in_flight_and_leaves_nothing_half_done(
        self, live: Deployment, engine: AsyncEngine
    ) -> None:
        url, proc = await asyncio.to_thread(start_service, live.env)
        await live.faults(slow_seconds=0.8)
        batch = [params() for _ in range(10)]
        with timed("SIGTERM with 10 callbacks in flight"):
            async with httpx.AsyncClient(timeout=DEADLINE + 5) as client:
                calls = [
                    asyncio.create_task(client.post(f"{url}/bidpaw/wallet", **signed_post(values)))
                    for values in batch
                ]
                await asyncio.sleep(0.4)
                proc.send_signal(signal.SIGTERM)
                responses = await asyncio.gather(*calls)
            code = await asyncio.to_thread(proc.wait, 30)
        assert code == 0
        assert [response.json() for response in responses] == [answer(0)] * 10
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT DISTINCT state FROM wallet_transactions"))
            states = rows.scalars().all()
        assert states == ["final"]
        for values in batch:
            [debit] = await live.operations(values["transactionId"])
            assert debit["state"] == "applied"


class TestReadmeTryIt:
    def test_local_mode_charge_replay_and_balance_answer_as_the_readme_shows(self, tmp_path: Path) -> None:
        """`serve --local` (its built-in sandbox wallet) and `bidpaw-sandbox` playing BidPaw, as
        the README starts them; the README's wallet block run as written (ports swapped)."""
        require_programs({"curl": "curl"})
        readme = (ROOT / "README.md").read_text()
        try_it = readme[readme.index("### Try it") : readme.index("<!-- first-hour: end -->")]
        block = next(b for b in re.findall(r"```sh\n(.*?)```", try_it, re.DOTALL) if "wallet-callback" in b)
        port, sandbox_port = free_port(), free_port()
        while port + 1 == sandbox_port:
            sandbox_port = free_port()
        bidpaw = {"BIDPAW_CLIENT_ID": "casino-1", "BIDPAW_SECRET_KEY": "sandbox-secret"}
        env = {**os.environ, "DATA_DIR": str(tmp_path / ".data"), "LOG_LEVEL": "WARNING", **bidpaw}
        for name in (
            "DATABASE_URL",
            "WALLET_URL",
            "WALLET_SECRET",
            "BIDPAW_CALLBACK_SECRET",
            "GATEWAY_API_KEYS",
        ):
            env.pop(name, None)
        callback = f"http://127.0.0.1:{port}/bidpaw/wallet"
        sandbox_cmd = ["bidpaw-sandbox", "--port", str(sandbox_port), "--callback-url", callback]
        serve_env = {**env, "BIDPAW_API_URL": f"http://127.0.0.1:{sandbox_port}", "BIDPAW_GAME_ID": "game-1"}
        serve_cmd = ["serve", "--local", "--port", str(port)]
        procs = [
            subprocess.Popen([sys.executable, "-m", "partner_gateway", *sandbox_cmd], env=env, cwd=tmp_path),
            subprocess.Popen(
                [sys.executable, "-m", "partner_gateway", *serve_cmd], env=serve_env, cwd=tmp_path
            ),
        ]
        try:
            with timed("serve --local and bidpaw-sandbox ready"):
                wait_listening(f"http://127.0.0.1:{sandbox_port}", procs[0])
                wait_ready(f"http://127.0.0.1:{port}", procs[1], timeout=120)
            keys = json.loads((tmp_path / ".data" / "local-secrets.json").read_text())
            opened = httpx.get(
                f"http://127.0.0.1:{port}/bidpaw/open-session",
                headers={
                    "Authorization": f"Bearer {keys['GATEWAY_API_KEYS']}",
                    "X-User-Id": "u1",
                    "X-User-Currency": "EUR",
                },
            )
            assert opened.status_code == 200, opened.text
            script = (
                block.replace("localhost:8001", f"127.0.0.1:{port + 1}")
                .replace("localhost:8100", f"127.0.0.1:{sandbox_port}")
                .replace("localhost:8000", f"127.0.0.1:{port}")
            )
            with timed("the README's wallet block"):
                done = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60
                )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
        assert done.returncode == 0, done.stderr
        got = [json.loads(line) for line in done.stdout.splitlines()]
        shown = [line[2:] for line in block.splitlines() if line.startswith("# {")]
        assert len(got) == len(shown) == 4
        assert got[0] == json.loads(shown[0])
        assert got[3] == json.loads(shown[3])
        for charge in got[1:3]:
            assert charge["answer"] == {"errorCode": 0, "errorDescription": ""}
            assert charge["status"] == 200
            assert (charge["sent"]["userId"], charge["sent"]["currency"]) == ("u1", "EUR")
        assert got[1]["sent"] == got[2]["sent"]

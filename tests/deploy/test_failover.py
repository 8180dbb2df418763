"""A PostgreSQL failover under load: a primary and a hot standby, two `serve` processes.

Each scenario builds a fresh pair from Debian's packages (tests/deploy/replication.py), migrates
it through the multi-host URL, and starts two service processes on it (one per libpq spelling).
Clients on separate connections then run session → authenticate pairs, replays of earlier
idempotency keys and introspections. Mid-load the standby is made to fall behind (the primary's
walsender is paused for LAG_SECONDS, so the async window is as wide as a slow network makes it),
the primary is stopped with `-m immediate`, and the standby promoted. Then:

- no 500, no transport error: only 503s while there is no writable primary;
- both processes serve again, without a restart, within RECOVERY_BOUND_SECONDS (measured and
  printed: from the crash, and from the promotion);
- every token answered 200 is valid on the new primary and every key replays byte for byte:
  with synchronous replication none may be lost; with asynchronous the loss is counted;
- the old primary, restarted as it was (writable, on the old timeline), gets no writes, even
  while the new primary restarts and the service looks for a writable host.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GATEWAY_HEADERS
from tests.deploy.conftest import note, timed
from tests.deploy.replication import ReplicatedPostgres, kill, pause
from tests.helpers import auth_body, auth_headers
from tests.processes import free_port, serve, service_environment, wait_ready
from tests.system import require_postgresql_server

pytestmark = pytest.mark.slow

TIMEOUT = "2"  # DB_TIMEOUT_SECONDS of both processes
WORKERS = 4  # clients per service process, each on its own connection
WARMUP_PAIRS = 40  # acknowledged pairs before the crash
LAG_SECONDS = 0.5  # how far the standby falls behind before the crash
RECOVERY_BOUND_SECONDS = 15.0  # from the promotion to both processes serving again (roomy)
AFTER_RECOVERY_SECONDS = 1.0
LOAD_DEADLINE_SECONDS = 60.0
SETTINGS = {"DB_TIMEOUT_SECONDS": TIMEOUT, "BETLINK_LAUNCH_TOKEN_TTL_SECONDS": "600"}
SESSION, AUTH, INTROSPECT = "/betlink/session", "/betlink/authenticate", "/betlink/sessions/introspect"


@dataclass
class Answer:
    process: int
    route: str
    status: int  # 0: a transport error
    started: float
    ended: float


@dataclass
class Acked:
    """An authenticate the service answered 200: what a replay must give back byte for byte."""

    key: str
    body: dict[str, str]
    answer: bytes
    token: str


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)
    # Sessions answered 201 whose authenticate has no 200 yet: (its key, its body). A 503 may
    # still have committed, so they are checked with the same key, which then replays.
    unexchanged: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # answers no failover may produce
    # Answers that show an acknowledged write was lost (async replication): a launch token
    # answered 201 now unknown, a key answered 200 no longer replaying its bytes.
    lost: list[str] = field(default_factory=list)

    async def call(
        self, client: httpx.AsyncClient, process: int, route: str, **request: object
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await client.post(route, **request)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            self.answers.append(Answer(process, route, 0, started, time.monotonic()))
            self.wrong.append(f"{route}: transport error {type(exc).__name__}")
            return None
        self.answers.append(Answer(process, route, response.status_code, started, time.monotonic()))
        return response

    def first_success_after(self, process: int, moment: float) -> float | None:
        ends = [
            a.ended for a in self.answers if a.process == process and a.started > moment and a.status < 300
        ]
        return min(ends, default=None)


async def _pair(client: httpx.AsyncClient, process: int, load: Load, stop: asyncio.Event, n: int) -> None:
    """One session → authenticate pair (the authenticate retried with its key on 503), then a
    replay of an earlier key and an introspection of the new token."""
    user = {**GATEWAY_HEADERS, "X-User-Id": f"p{process}-{n}"}
    response = await load.call(client, process, SESSION, headers=user)
    if response is None or response.status_code != 201:
        if response is not None and response.status_code != 503:
            load.wrong.append(f"{SESSION}: {response.status_code}")
        return
    key, body = str(uuid.uuid4()), auth_body(response.json())
    load.unexchanged.append((key, body))
    while not stop.is_set():
        response = await load.call(client, process, AUTH, headers=auth_headers(key), json=body)
        if response is None:
            return
        if response.status_code == 200:
            load.unexchanged.remove((key, body))
            token = response.json()["operatorSessionToken"]
            load.acked.append(Acked(key, body, response.content, token))
            break
        if response.status_code != 503:
            unknown = response.status_code == 401 and "INVALID_SESSION" in response.text
            (load.lost if unknown else load.wrong).append(f"{AUTH}: {response.status_code} {response.text}")
            return
        await asyncio.sleep(0.05)
    else:
        return
    if len(load.acked) > 1:
        earlier = random.choice(load.acked[:-1])
        replay = {**earlier.body, "requestId": str(uuid.uuid4())}
        response = await load.call(client, process, AUTH, headers=auth_headers(earlier.key), json=replay)
        if response is not None and response.status_code != 503 and response.content != earlier.answer:
            load.lost.append(f"replay: {response.status_code} {response.text}")
    introspect = {"operatorSessionToken": token}
    response = await load.call(client, process, INTROSPECT, headers=GATEWAY_HEADERS, json=introspect)
    if response is not None and response.status_code not in (200, 503):
        load.wrong.append(f"{INTROSPECT}: {response.status_code}")


async def _worker(url: str, process: int, load: Load, stop: asyncio.Event, worker: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        n = 0
        while not stop.is_set():
            n += 1
            await _pair(client, process, load, stop, worker * 100_000 + n)


async def _until(condition: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


@dataclass
class Switch:
    paused: float = 0.0
    crashed: float = 0.0
    promoted: float = 0.0
    recovered: dict[int, float] = field(default_factory=dict)
    readyz: list[int] = field(default_factory=list)  # each process's /readyz before the promotion


async def _fail_over(cluster: ReplicatedPostgres, urls: list[str], load: Load) -> Switch:
    """Load both processes; mid-load, the standby falls behind, the primary dies, the standby is
    promoted. Returns when both processes have served again (and a little longer)."""
    stop, switch = asyncio.Event(), Switch()
    workers = [
        asyncio.create_task(_worker(url, process, load, stop, worker))
        for process, url in enumerate(urls)
        for worker in range(WORKERS)
    ]
    try:
        await _until(lambda: len(load.acked) >= WARMUP_PAIRS, timeout=30, what="no warm-up")
        walsender = await asyncio.to_thread(cluster.walsender_pid)
        pause(walsender)
        switch.paused = time.monotonic()
        await asyncio.sleep(LAG_SECONDS)
        stopping = asyncio.create_task(asyncio.to_thread(cluster.primary.stop, "immediate"))
        await asyncio.sleep(0.3)
        kill(walsender)  # dies without sending what it held back
        await stopping
        switch.crashed = time.monotonic()  # pg_ctl stop -m immediate waits until the server is gone
        async with httpx.AsyncClient(timeout=30) as probe:  # no writable primary: not ready
            switch.readyz = [(await probe.get(f"{url}/readyz")).status_code for url in urls]
        await asyncio.to_thread(cluster.standby.promote)
        switch.promoted = time.monotonic()

        def recovered() -> bool:
            for process in range(len(urls)):
                if (moment := load.first_success_after(process, switch.crashed)) is not None:
                    switch.recovered[process] = moment
            return len(switch.recovered) == len(urls)

        await _until(recovered, timeout=RECOVERY_BOUND_SECONDS, what="a process did not recover")
        await asyncio.sleep(AFTER_RECOVERY_SECONDS)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=LOAD_DEADLINE_SECONDS)
    return switch


async def _burst(urls: list[str], load: Load, seconds: float) -> None:
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(_worker(url, process, load, stop, 50 + worker))
        for process, url in enumerate(urls)
        for worker in range(WORKERS)
    ]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*workers), timeout=LOAD_DEADLINE_SECONDS)


@dataclass
class Losses:
    replays: int = 0  # keys that no longer replay their 200 byte for byte
    tokens: int = 0  # session tokens answered 200 that introspect as inactive
    launches: int = 0  # launch tokens answered 201 that no longer authenticate

    @property
    def total(self) -> int:
        return self.replays + self.tokens + self.launches


async def _count_losses(url: str, load: Load) -> Losses:
    """Every acknowledged answer checked on the new primary, through the service."""
    losses, queue = Losses(), asyncio.Queue[object]()
    for item in [*load.acked, *load.unexchanged]:
        queue.put_nowait(item)

    async def post(client: httpx.AsyncClient, route: str, **request: Any) -> httpx.Response:
        for _ in range(50):  # the service is back: a 503 here would be a reconnect, retried
            answer = await client.post(route, **request)
            if answer.status_code != 503:
                return answer
            await asyncio.sleep(0.1)
        raise AssertionError(f"{route}: still 503 after the failover")

    async def check(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            if isinstance(item, Acked):
                replay = {**item.body, "requestId": str(uuid.uuid4())}
                answer = await post(client, AUTH, headers=auth_headers(item.key), json=replay)
                losses.replays += answer.content != item.answer
                introspect = {"operatorSessionToken": item.token}
                answer = await post(client, INTROSPECT, headers=GATEWAY_HEADERS, json=introspect)
                losses.tokens += answer.json() == {"active": False}
            else:
                assert isinstance(item, tuple)
                key, body = item
                answer = await post(client, AUTH, headers=auth_headers(key), json=body)
                losses.launches += answer.status_code == 401

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(*(check(client) for _ in range(8)))
    return losses


def _old_primary_rows(cluster: ReplicatedPostgres) -> int:
    return int(
        cluster.primary.sql(
            "SELECT (SELECT count(*) FROM user_sessions) + (SELECT count(*) FROM idempotency_keys)"
        )
    )


ROOT = Path(__file__).resolve().parents[2]  # where alembic.ini is


def _command(url: str, *command: str) -> None:
    """`partner-gateway migrate`/`purge`, or `alembic upgrade head`, on the multi-host URL."""
    if command[0] == "alembic":
        program = [str(Path(sys.executable).with_name("alembic")), *command[1:]]
    else:
        program = [sys.executable, "-m", "partner_gateway", *command]
    env = service_environment(url)
    done = subprocess.run(program, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _start_services(urls: list[str]) -> list[tuple[subprocess.Popen[bytes], str]]:
    """One `serve` per URL, started together (each takes seconds to start on a loaded machine)."""
    services = []
    for url in urls:
        port = free_port()
        services.append((serve(url, port, workers=1, **SETTINGS), f"http://127.0.0.1:{port}"))
    try:
        for proc, base in services:
            wait_ready(base, proc)
    except BaseException:
        for proc, _ in services:
            proc.kill()
        raise
    return services


@pytest.fixture(scope="module")
def postgresql_bin() -> Path:
    return require_postgresql_server()


@pytest.mark.parametrize("synchronous", [True, False], ids=["synchronous", "asynchronous"])
async def test_failover_under_load(postgresql_bin: Path, synchronous: bool) -> None:
    mode = "synchronous" if synchronous else "asynchronous"
    with timed(f"failover ({mode}): a primary and a hot standby"):
        cluster = await asyncio.to_thread(ReplicatedPostgres.create, postgresql_bin, synchronous=synchronous)
    try:
        urls = [cluster.url(spelling="netloc"), cluster.url(spelling="query")]
        # Both ways to migrate, one per scenario, each on one spelling of the host list.
        migrate = ("migrate",) if synchronous else ("alembic", "upgrade", "head")
        with timed(f"failover ({mode}): {' '.join(migrate)} through the multi-host URL"):
            await asyncio.to_thread(_command, urls[0] if synchronous else urls[1], *migrate)
        with timed(f"failover ({mode}): two service processes ready"):
            services = _start_services(urls)
        try:
            await _check_failover(cluster, [base for _, base in services], mode=mode, synchronous=synchronous)
        finally:
            for proc, _ in services:
                proc.terminate()
            for proc, _ in services:
                proc.wait(timeout=30)
    finally:
        await asyncio.to_thread(cluster.destroy)


async def _check_failover(
    cluster: ReplicatedPostgres, services: list[str], *, mode: str, synchronous: bool
) -> None:
    load = Load()
    started = time.monotonic()
    switch = await _fail_over(cluster, services, load)
    took = time.monotonic() - started
    note(f"failover ({mode}): load and switch took {took:.1f} s, {len(load.answers)} answers")
    assert not load.wrong, load.wrong[:10]
    statuses = Counter(answer.status for answer in load.answers)
    assert set(statuses) <= {200, 201, 401, 503}, statuses
    if synchronous:
        assert not load.lost, load.lost[:10]
    during = [a for a in load.answers if a.status == 503 and a.ended >= switch.paused]
    assert all(a.ended <= switch.recovered[a.process] + 3 for a in during)  # none long after
    for process, moment in sorted(switch.recovered.items()):
        note(
            f"failover ({mode}): process {process} serves again {moment - switch.crashed:.2f} s after "
            f"the primary was gone, {moment - switch.promoted:.2f} s after the promotion "
            f"(which took {switch.promoted - switch.crashed:.2f} s)"
        )
        assert moment - switch.promoted < RECOVERY_BOUND_SECONDS
    note(f"failover ({mode}): {len(during)} answers 503 during the switch, statuses {dict(statuses)}")
    assert switch.readyz == [503, 503]
    async with httpx.AsyncClient(timeout=30) as probe:
        for url in services:
            assert (await probe.get(f"{url}/readyz")).status_code == 200
            assert "partner_gateway_db_server_lost_total{" in (await probe.get(f"{url}/metrics")).text

    with timed(f"failover ({mode}): old primary restarted as it was; new primary restarted under load"):
        await asyncio.to_thread(cluster.primary.start)
        before = await asyncio.to_thread(_old_primary_rows, cluster)
        burst = Load()
        await asyncio.gather(_burst(services, burst, 4.0), _restart_new_primary(cluster))
        # Commits waiting there for a synchronous standby that will never come are let through.
        await asyncio.to_thread(cluster.primary.sql, "ALTER SYSTEM RESET synchronous_standby_names")
        await asyncio.to_thread(cluster.primary.sql, "SELECT pg_reload_conf()")
        await asyncio.sleep(0.5)
        after = await asyncio.to_thread(_old_primary_rows, cluster)
    assert not burst.wrong, burst.wrong[:10]
    assert not burst.lost, burst.lost[:10]  # nothing lost while the new primary restarted
    assert after == before, f"the old primary got {after - before} rows"
    served_after = sum(a.status < 300 for a in burst.answers)
    note(f"failover ({mode}): old primary got 0 writes; {served_after} answers 2xx from the new primary")
    assert served_after > 0

    load.acked += burst.acked
    load.unexchanged += burst.unexchanged
    with timed(f"failover ({mode}): {len(load.acked)} acknowledged tokens checked on the new primary"):
        # Meanwhile `purge` (the same connect path) finds the new primary too.
        purge = asyncio.to_thread(_command, cluster.url(), "purge")
        losses, _ = await asyncio.gather(_count_losses(services[0], load), purge)
    note(
        f"failover ({mode}, standby {LAG_SECONDS} s behind at the crash): "
        f"lost {losses.tokens} session tokens, {losses.replays} replays, "
        f"{losses.launches} launch tokens of {len(load.acked)} pairs; "
        f"{len(load.lost)} answers during the load showed a loss"
    )
    if synchronous:
        assert losses.total == 0, losses


async def _restart_new_primary(cluster: ReplicatedPostgres) -> None:
    """While the old primary is up and writable, the new one goes away for a moment: the service
    must answer 503 rather than write to the old one."""
    await asyncio.sleep(0.5)
    await asyncio.to_thread(cluster.standby.stop, "fast")
    await asyncio.sleep(1.0)
    await asyncio.to_thread(cluster.standby.start)

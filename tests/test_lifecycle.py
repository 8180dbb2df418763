"""SIGTERM: requests already accepted are answered before the process exits."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import auth_body, auth_headers, hold_key_claim, launch
from tests.processes import free_port, serve, wait_ready


@pytest.mark.slow
class TestGracefulShutdown:
    async def test_sigterm_lets_an_in_flight_request_finish(
        self, database_url: str, engine: AsyncEngine
    ) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = serve(database_url, port, DB_TIMEOUT_SECONDS="10")
        try:
            wait_ready(url, proc)
            async with httpx.AsyncClient(base_url=url) as client:
                session = await launch(client)
            key = uuid.uuid4()
            answers: list[httpx.Response] = []
            async with engine.connect() as blocker:
                # Hold the key's claim so the request is provably in flight when SIGTERM lands.
                await hold_key_claim(blocker, key)
                body, headers = auth_body(session), auth_headers(str(key))
                call = threading.Thread(
                    target=lambda: answers.append(
                        httpx.post(f"{url}/betlink/authenticate", json=body, headers=headers, timeout=30)
                    )
                )
                call.start()
                time.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.5)
                assert proc.poll() is None, "exited with a request in flight"
                await blocker.rollback()
            call.join(timeout=30)
            assert proc.wait(timeout=30) == 0
            assert [r.status_code for r in answers] == [200]
            assert answers[0].json()["status"] == "AUTHENTICATED"
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.slow
class TestWorkers:
    async def test_two_workers_serve_count_together_and_stop_together(self, database_url: str) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = serve(database_url, port, workers=2)
        try:
            wait_ready(url, proc)
            async with httpx.AsyncClient(base_url=url) as client:
                for _ in range(6):
                    session = await launch(client)
                    response = await client.post(
                        "/betlink/authenticate", json=auth_body(session), headers=auth_headers()
                    )
                    assert response.status_code == 200
                # Counters are summed over both workers, whichever answers the scrape.
                for _ in range(4):
                    metrics = (await client.get("/metrics")).text
                    assert 'partner_gateway_betlink_auth_total{outcome="AUTHENTICATED"} 6.0' in metrics
                    assert "partner_gateway_db_pool_in_use{pid=" in metrics
                    assert "partner_gateway_build_info{" in metrics
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()

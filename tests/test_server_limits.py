"""What uvicorn bounds for greedy clients: connections at once (HTTP_MAX_CONCURRENCY) and idle
keep-alive connections (HTTP_KEEPALIVE_SECONDS). Header size and time are the proxy's job."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.processes import free_port, served

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.slow
class TestServerLimits:
    def test_past_the_concurrency_limit_the_answer_is_an_immediate_503(self, database_url: str) -> None:
        with served(database_url, HTTP_MAX_CONCURRENCY="3") as url:
            holders = [socket.create_connection(("127.0.0.1", _port(url)), timeout=5) for _ in range(3)]
            try:
                started = time.monotonic()
                response = httpx.get(f"{url}/healthz", timeout=5)
                assert response.status_code == 503
                assert time.monotonic() - started < 2
            finally:
                for holder in holders:
                    holder.close()
            time.sleep(0.2)
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200

    def test_the_probe_port_answers_while_slow_clients_fill_the_main_port(self, database_url: str) -> None:
        probe_port = free_port()
        with served(database_url, HTTP_MAX_CONCURRENCY="3", PROBE_PORT=str(probe_port)) as url:
            slow = [socket.create_connection(("127.0.0.1", _port(url)), timeout=5) for _ in range(3)]
            try:
                for client in slow:  # a request that never finishes its headers
                    client.sendall(b"POST /betlink/session HTTP/1.1\r\nHost: x\r\n")
                time.sleep(0.2)
                assert httpx.get(f"{url}/healthz", timeout=5).status_code == 503
                probes = f"http://127.0.0.1:{probe_port}"
                started = time.monotonic()
                answers = [
                    httpx.get(f"{probes}{path}", timeout=5) for path in ("/healthz", "/readyz", "/metrics")
                ]
                elapsed = time.monotonic() - started
            finally:
                for client in slow:
                    client.close()
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert answers[0].json() == {"status": "ok"}
        assert answers[1].json()["status"] == "ready"
        assert "partner_gateway_db_pool_in_use" in answers[2].text
        assert elapsed < 3

    def test_an_idle_keep_alive_connection_is_closed(self, database_url: str) -> None:
        with served(database_url, HTTP_KEEPALIVE_SECONDS="1") as url:
            with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as sock:
                sock.sendall(REQUEST)
                answer = sock.makefile("rb")
                assert answer.readline().startswith(b"HTTP/1.1 200 ")
                headers = dict(
                    line.decode().strip().split(": ", 1) for line in iter(answer.readline, b"\r\n")
                )
                answer.read(int(headers["content-length"]))
                started = time.monotonic()
                assert answer.read(1) == b""  # closed by the server
                assert 0.5 < time.monotonic() - started < 5

"""What slow and oversized clients can still do to one `serve` process (README: Security).

    python3 scripts/dev.py bench-greedy   (or .venv/bin/python bench/greedy_clients.py)

Starts `serve --local` in a temporary directory and measures, on loopback only:
- a 50 MB header on /healthz: accepted or refused, and how long it took;
- 16 connections each sending a 40 MB header at once: the process's peak RSS;
- a header sent one byte a second: how long the server keeps the connection;
- HTTP_MAX_CONCURRENCY: what a client past the limit gets.
Every loop is bounded in bytes and time; the process is stopped at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _big_header(port: int, size: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
            sock.sendall(b"\r\n\r\n")
            return sock.recv(64).split(b"\r\n")[0].decode() or "closed"
        except OSError as exc:
            return f"refused ({type(exc).__name__})"


def _trickle(port: int, *, limit: float) -> float:
    """Seconds the server keeps a connection whose header arrives one byte a second."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit + 5) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() - started < limit:
                sock.sendall(b"X")
                time.sleep(1)
        except OSError:
            pass
    return time.monotonic() - started


def main() -> None:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DATA_DIR": tmp, "LOG_LEVEL": "WARNING", "HTTP_MAX_CONCURRENCY": "8"}
        env.pop("DATABASE_URL", None)
        command = [sys.executable, "-m", "partner_gateway", "serve", "--local", "--port", str(port)]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, cwd=tmp)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            base = _rss_mib(proc.pid)
            started = time.monotonic()
            answer = _big_header(port, 50 * 2**20)
            print(f"50 MB header on /healthz: {answer} after {time.monotonic() - started:.1f} s")

            peak = [base]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], _rss_mib(proc.pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            senders = [threading.Thread(target=_big_header, args=(port, 40 * 2**20)) for _ in range(16)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(timeout=120)
            stop.set()
            sampler.join()
            print(f"16 x 40 MB headers: RSS {base:.0f} MiB before, {peak[0]:.0f} MiB peak")

            held = _trickle(port, limit=20)
            print(f"header at 1 byte/s: connection held {held:.0f} s (stopped at 20 s by this script)")

            with httpx.Client() as client:
                holders = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
                try:
                    response = client.get(f"http://127.0.0.1:{port}/healthz")
                    print(f"past HTTP_MAX_CONCURRENCY=8: {response.status_code} {response.text!r}")
                finally:
                    for holder in holders:
                        holder.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()

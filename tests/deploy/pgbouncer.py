"""A real PgBouncer for the tests: deploy/pgbouncer/pgbouncer.ini with this run's addresses.

The reference file is used as it is, except for the values `render` replaces (each must be in
it exactly once): where PostgreSQL and PgBouncer listen, the userlist's path, the server pool's
size and the admin console's user. PgBouncer refuses to run as root: under root it runs as the
owner of the embedded server's socket directory, the one user that can reach that socket anyway.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini"


def render(text: str, values: dict[str, str]) -> str:
    """`text` with the value of each `key = value` line named in `values` replaced."""
    for key, value in values.items():
        pattern = re.compile(rf"^{re.escape(key)} = .*$", re.MULTILINE)
        text, count = pattern.subn(f"{key} = {value}".replace("\\", "\\\\"), text)
        if count != 1:
            raise ValueError(f"{REFERENCE.name} has {count} lines setting {key}, not 1")
    return text


@dataclass
class PgBouncer:
    """One PgBouncer process on 127.0.0.1:`port`, restartable on the same port."""

    directory: Path
    port: int
    owner: tuple[int, int] | None  # (uid, gid) to run as, when we are root
    proc: subprocess.Popen[bytes] | None = field(default=None)

    @classmethod
    def configure(
        cls,
        *,
        server_host: str,
        server_port: int,
        database: str,
        userlist: str,
        port: int,
        pool_size: int,
        admin: str = "pgbouncer_admin",
    ) -> PgBouncer:
        owner = None
        if os.geteuid() == 0:
            stat = os.stat(server_host)
            owner = (stat.st_uid, stat.st_gid)
        directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        values = {
            "gateway": f"host={server_host} port={server_port} dbname={database}",
            "listen_addr": "127.0.0.1",
            "listen_port": str(port),
            "auth_file": str(directory / "userlist.txt"),
            "default_pool_size": str(pool_size),
            "admin_users": admin,
        }
        (directory / "pgbouncer.ini").write_text(render(REFERENCE.read_text(), values))
        (directory / "userlist.txt").write_text(userlist)
        os.chmod(directory / "userlist.txt", 0o600)
        if owner is not None:
            for path in (directory, directory / "pgbouncer.ini", directory / "userlist.txt"):
                os.chown(path, *owner)
        return cls(directory=directory, port=port, owner=owner)

    def start(self, *, timeout: float = 10) -> None:
        log = (self.directory / "pgbouncer.log").open("ab")
        as_owner: dict[str, Any] = {}
        if self.owner is not None:
            as_owner = {"user": self.owner[0], "group": self.owner[1], "extra_groups": []}
        self.proc = subprocess.Popen(
            ["pgbouncer", str(self.directory / "pgbouncer.ini")],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            **as_owner,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"pgbouncer did not listen on {self.port}: {self.log_tail()}")

    def stop(self) -> None:
        """Immediate shutdown (SIGTERM in PgBouncer 1.18): every connection is dropped."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / "pgbouncer.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

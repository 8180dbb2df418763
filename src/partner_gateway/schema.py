"""Alembic, driven from code: `partner-gateway migrate`, local mode's start-up and the tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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

"""Migrations: the models and the migrations agree, and `partner-gateway migrate` is idempotent."""

from __future__ import annotations

import os
import subprocess
import sys

from alembic import command

from partner_gateway.schema import alembic_config


class TestMigrations:
    def test_alembic_check_finds_no_drift(self, database_url: str) -> None:
        command.check(alembic_config(database_url))  # raises on any difference

    def test_migrate_command_on_an_up_to_date_database(self, database_url: str) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "GATEWAY_API_KEYS": "k",
            "BETLINK_API_KEYS": "k",
            "BETLINK_OPERATOR_ID": "o",
            "BETLINK_REDIRECT_URL": "https://x/",
            "DATA_ENCRYPTION_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        }
        result = subprocess.run(
            [sys.executable, "-m", "partner_gateway", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr

    def test_plain_alembic_upgrade_head_works(self, database_url: str) -> None:
        env = {**os.environ, "DATABASE_URL": database_url}
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr

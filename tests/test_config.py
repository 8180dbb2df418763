"""Settings: validated at start-up, one line naming the variable, secrets never echoed."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from partner_gateway.config import ConfigError, load_settings
from tests.conftest import ENCRYPTION_KEY

REQUIRED = {
    "DATABASE_URL": "postgresql+asyncpg://u:p@db.invalid/x",
    "GATEWAY_API_KEYS": "gw-a,gw-b",
    "BETLINK_API_KEYS": "bl-a",
    "BETLINK_OPERATOR_ID": "op",
    "BETLINK_REDIRECT_URL": "https://casino.example/",
    "DATA_ENCRYPTION_KEY": ENCRYPTION_KEY,
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name in [*REQUIRED, "DATA_DIR", "BETLINK_USER_ID_KEY", "BIDPAW_API_URL"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


class TestExternalDatabase:
    def test_complete_settings_load(self, env: pytest.MonkeyPatch) -> None:
        settings, generated = load_settings()
        assert generated == {}
        assert [k.get_secret_value() for k in settings.gateway_api_keys] == ["gw-a", "gw-b"]
        assert settings.betlink_launch_token_ttl_seconds == 10
        assert settings.betlink_session_ttl_seconds == 1800

    @pytest.mark.parametrize("name", [n for n in REQUIRED if n != "DATABASE_URL"])
    def test_each_missing_required_variable_names_itself(self, env: pytest.MonkeyPatch, name: str) -> None:
        env.delenv(name)
        with pytest.raises(ConfigError, match=f"^{name} is required"):
            load_settings()

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("DATA_ENCRYPTION_KEY", "c2VjcmV0LXRvby1zaG9ydA=="),
            ("BETLINK_USER_ID_KEY", base64.b64encode(b"k" * 32).decode()),
            ("DATABASE_URL", "postgresql://secret-password@db/x"),
            ("BETLINK_SESSION_TTL_SECONDS", "-5"),
            ("DB_TIMEOUT_SECONDS", "soon"),
            ("BIDPAW_API_URL", "ftp://bidpaw"),
            ("LOG_FORMAT", "xml"),
        ],
    )
    def test_malformed_values_name_the_variable_without_echoing_it(
        self, env: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        env.setenv(name, value)
        with pytest.raises(ConfigError) as raised:
            load_settings()
        assert str(raised.value).startswith(f"{name}: ")
        assert value not in str(raised.value)

    def test_serve_prints_one_line_and_exits_2(self, env: pytest.MonkeyPatch) -> None:
        env.delenv("BETLINK_OPERATOR_ID")
        result = subprocess.run(
            [sys.executable, "-m", "partner_gateway", "serve"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "partner-gateway: configuration error: BETLINK_OPERATOR_ID is required (see .env.example)"
        ]


class TestLocalMode:
    def test_generates_keys_once_and_reuses_them(self, env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        for name in REQUIRED:
            env.delenv(name)
        env.setenv("DATA_DIR", str(tmp_path / "data"))
        first, generated = load_settings()
        second, again = load_settings()
        assert set(generated) == {"GATEWAY_API_KEYS", "BETLINK_API_KEYS", "DATA_ENCRYPTION_KEY"}
        assert again == generated
        assert first.gateway_api_keys == second.gateway_api_keys
        assert first.betlink_operator_id == "local-operator"
        assert first.betlink_redirect_url == "http://localhost:8000/"
        assert len(first.encryption_keys[0]) == 32
        assert (tmp_path / "data" / "local-secrets.json").stat().st_mode & 0o777 == 0o600

    def test_variables_set_by_the_operator_win_over_generated_ones(
        self, env: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        env.delenv("DATABASE_URL")
        env.setenv("DATA_DIR", str(tmp_path / "data"))
        settings, generated = load_settings()
        assert generated == {}
        assert settings.betlink_operator_id == "op"

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


BIDPAW_TODAY = ("BIDPAW_CLIENT_ID", "BIDPAW_SECRET_KEY", "BIDPAW_GAME_ID", "BIDPAW_ALLOWED_COUNTRIES")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    wallet = ["BIDPAW_CALLBACK_SECRET", "WALLET_SECRET", "WALLET_URL"]
    for name in [*REQUIRED, "DATA_DIR", "BETLINK_USER_ID_KEY", "BIDPAW_API_URL", *BIDPAW_TODAY, *wallet]:
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
            ("DATABASE_URL", "postgresql+asyncpg://gw:secret-password@db:54x2/x"),
            ("DATABASE_URL", "postgresql+asyncpg://gw:secret-password@db:99999/x"),
            ("DATABASE_URL", "postgresql+asyncpg://gw:secret-password@db/x?sslmode=require"),
            ("DATABASE_URL", "postgresql+asyncpg://gw:secret-password@db/x?ssl=bogus"),
            ("DATABASE_URL", "postgresql+asyncpg://gw:secret-password@db/x?prepared_statement_cache_size=x"),
            ("DATABASE_URL", "postgresql+asyncpg://gw:secret-password@/x?host=/a&host=/b"),
            ("BETLINK_SESSION_TTL_SECONDS", "-5"),
            ("DB_TIMEOUT_SECONDS", "soon"),
            ("BIDPAW_API_URL", "ftp://bidpaw"),
            ("BIDPAW_ALLOWED_COUNTRIES", "USA"),
            ("BIDPAW_ALLOWED_COUNTRIES", "US;GB"),
            ("BIDPAW_ALLOWED_COUNTRIES", "US,,GB"),
            ("BIDPAW_ALLOWED_COUNTRIES", "U1"),
            ("BIDPAW_ALLOWED_COUNTRIES", "D\u0130"),
            ("LOG_FORMAT", "xml"),
            ("DB_POOLER", "pgpool"),
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


class TestBidPawSettings:
    def test_allowed_countries_are_upper_cased_and_trimmed(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("BIDPAW_ALLOWED_COUNTRIES", " us, Gb ,DE")
        assert load_settings()[0].bidpaw_allowed_countries == ["US", "GB", "DE"]

    @pytest.mark.parametrize("value", [None, "", "  "])
    def test_no_allowed_countries_is_an_empty_list(self, env: pytest.MonkeyPatch, value: str | None) -> None:
        if value is not None:
            env.setenv("BIDPAW_ALLOWED_COUNTRIES", value)
        assert load_settings()[0].bidpaw_allowed_countries == []

    def test_bidpaw_is_configured_only_with_a_game_id(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("BIDPAW_API_URL", "https://bidpaw.example")
        env.setenv("BIDPAW_CLIENT_ID", "casino-1")
        env.setenv("BIDPAW_SECRET_KEY", "secret-1")
        assert not load_settings()[0].bidpaw_configured
        env.setenv("BIDPAW_GAME_ID", "")
        assert not load_settings()[0].bidpaw_configured
        env.setenv("BIDPAW_GAME_ID", "game-1")
        assert load_settings()[0].bidpaw_configured

    def test_serve_with_a_malformed_country_list_prints_one_line_and_exits_2(
        self, env: pytest.MonkeyPatch
    ) -> None:
        env.setenv("BIDPAW_ALLOWED_COUNTRIES", "US,Great Britain")
        result = subprocess.run(
            [sys.executable, "-m", "partner_gateway", "serve"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "partner-gateway: configuration error: BIDPAW_ALLOWED_COUNTRIES: Value error, must be "
            "comma-separated ISO 3166-1 alpha-2 codes, e.g. US,GB"
        ]


class TestLocalMode:
    def test_generates_keys_once_and_reuses_them(self, env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        for name in REQUIRED:
            env.delenv(name)
        env.setenv("DATA_DIR", str(tmp_path / "data"))
        first, generated = load_settings(local=True)
        second, again = load_settings(local=True)
        assert set(generated) == {
            "GATEWAY_API_KEYS",
            "BETLINK_API_KEYS",
            "DATA_ENCRYPTION_KEY",
            "BIDPAW_CALLBACK_SECRET",
            "WALLET_SECRET",
        }
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
        env.setenv("BIDPAW_CALLBACK_SECRET", "cb-operator")
        env.setenv("WALLET_SECRET", "ws-operator")
        settings, generated = load_settings(local=True)
        assert generated == {}
        assert settings.wallet_secret[0].get_secret_value() == "ws-operator"
        assert settings.betlink_operator_id == "op"


class TestLocalModeOnlyWhenAskedFor:
    """A container without DATABASE_URL must not quietly get a private, throw-away database."""

    @pytest.mark.parametrize("command", ["serve", "migrate", "purge"])
    def test_without_database_url_or_local_nothing_starts(
        self, env: pytest.MonkeyPatch, tmp_path: Path, command: str
    ) -> None:
        env.delenv("DATABASE_URL")
        env.setenv("DATA_DIR", str(tmp_path / "data"))
        result = subprocess.run(
            [sys.executable, "-m", "partner_gateway", command], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "partner-gateway: configuration error: DATABASE_URL is required; for development on this "
            f"machine ask for local mode: partner-gateway {command} --local"
        ]
        assert result.stdout == ""
        assert not (tmp_path / "data").exists()  # no key generated, no database created

    def test_no_secret_is_generated_without_local(self, env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        for name in REQUIRED:
            env.delenv(name)
        env.setenv("DATA_DIR", str(tmp_path / "data"))
        with pytest.raises(ConfigError, match=r"^DATABASE_URL is required"):
            load_settings()
        assert not (tmp_path / "data").exists()

    def test_local_and_database_url_together_are_refused(self, env: pytest.MonkeyPatch) -> None:
        with pytest.raises(ConfigError, match=r"^DATABASE_URL is set, so --local"):
            load_settings(local=True)

    def test_migrate_and_purge_need_nothing_but_the_database(self, env: pytest.MonkeyPatch) -> None:
        for name in REQUIRED:
            if name != "DATABASE_URL":
                env.delenv(name)
        settings, generated = load_settings(command="migrate", service=False)
        assert settings.database_url == REQUIRED["DATABASE_URL"]
        assert generated == {}

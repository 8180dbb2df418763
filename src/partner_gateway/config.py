"""Settings: every environment variable of the contract, validated once at start-up.

Local mode (`--local`, development only) fills the secrets an operator would otherwise supply
with values generated once into `DATA_DIR`, so a newcomer can run the service with one command.
It is never inferred: without `DATABASE_URL` and without `--local`, nothing starts.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

LOCAL_SECRETS_FILE = "local-secrets.json"
LOCAL_OPERATOR_ID = "local-operator"
LOCAL_REDIRECT_URL = "http://localhost:8000/"
# Local mode's built-in sandbox wallet listens on the port after serve's (8001 beside 8000).
LOCAL_WALLET_PORT_OFFSET = 1
LOCAL_WALLET_URL = "http://127.0.0.1:8001"

SecretList = Annotated[list[SecretStr], NoDecode]

# Query parameters of DATABASE_URL that every way the service connects understands alike:
# `host` (a unix socket directory) and `ssl` (one of asyncpg's SSL_MODES). Anything else would
# start and then fail each request, so it stops start-up instead.
DATABASE_URL_PARAMETERS = frozenset({"host", "ssl"})
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# An ISO 3166-1 alpha-2 code as BIDPAW_ALLOWED_COUNTRIES and X-User-Country take it: two ASCII
# letters, any case (sent upper-case).
COUNTRY_CODE = re.compile(r"[A-Za-z]{2}")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable and never its value."""


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [SecretStr(part.strip()) for part in value.split(",") if part.strip()]
    return value


def _decode_keys(keys: list[SecretStr], *, size: int) -> list[bytes]:
    decoded = []
    for key in keys:
        try:
            raw = base64.b64decode(key.get_secret_value(), altchars=b"-_", validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"each key must be base64 of {size} bytes") from exc
        if len(raw) != size:
            raise ValueError(f"each key must be base64 of {size} bytes")
        decoded.append(raw)
    return decoded


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str | None = None
    data_dir: Path = Path(".data")

    gateway_api_keys: SecretList = Field(default_factory=list)
    betlink_api_keys: SecretList = Field(default_factory=list)
    betlink_operator_id: str | None = None
    betlink_redirect_url: str | None = None
    betlink_user_id_key: SecretList = Field(default_factory=list)
    betlink_launch_token_ttl_seconds: int = Field(10, gt=0)
    betlink_session_ttl_seconds: int = Field(1800, gt=0)

    data_encryption_key: SecretList = Field(default_factory=list)
    idempotency_ttl_seconds: int = Field(86400, gt=0)

    db_timeout_seconds: float = Field(5.0, gt=0)
    db_pool_size: int = Field(20, ge=1)
    db_max_overflow: int = Field(0, ge=0)
    db_pool_pre_ping: bool = False
    db_pooler: Literal["none", "pgbouncer"] = "none"

    bidpaw_api_url: str | None = None
    bidpaw_client_id: str | None = None
    bidpaw_secret_key: SecretStr | None = None
    bidpaw_timeout_seconds: float = Field(5.0, gt=0)
    bidpaw_game_id: str | None = None
    bidpaw_callback_secret: SecretList = Field(default_factory=list)
    bidpaw_callback_signature: Literal["required", "off"] = "required"
    bidpaw_wallet_deadline_seconds: float = Field(3.0, gt=0)
    bidpaw_wallet_max_amount: int = Field(1_000_000, ge=1)
    bidpaw_allowed_countries: Annotated[list[str], NoDecode] = Field(default_factory=list)

    wallet_url: str | None = None
    wallet_secret: SecretList = Field(default_factory=list)
    wallet_timeout_seconds: float = Field(2.0, gt=0)

    max_body_bytes: int = Field(65536, ge=1024)
    http_max_concurrency: int = Field(1000, ge=1)
    http_keepalive_seconds: float = Field(5.0, gt=0)
    docs_enabled: bool = True
    otel_exporter_otlp_endpoint: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator(
        "gateway_api_keys",
        "betlink_api_keys",
        "betlink_user_id_key",
        "data_encryption_key",
        "bidpaw_callback_secret",
        "wallet_secret",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("bidpaw_allowed_countries", mode="before")
    @classmethod
    def _country_list(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        codes = [part.strip() for part in value.split(",")] if value.strip() else []
        if not all(COUNTRY_CODE.fullmatch(code) for code in codes):
            raise ValueError("must be comma-separated ISO 3166-1 alpha-2 codes, e.g. US,GB")
        return [code.upper() for code in codes]

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _asyncpg_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must start with postgresql+asyncpg://")
        try:
            url = make_url(value)
            port = url.port  # parses the port: "host:abc" fails here, not at connect
        except (ArgumentError, ValueError):
            # SQLAlchemy's own message quotes the URL, password included: never repeat it.
            raise ValueError("is not a valid URL (postgresql+asyncpg://user:password@host:port/db)") from None
        if port is not None and not 0 < port < 65536:
            raise ValueError("has a port outside 1-65535")
        unknown = sorted(set(url.query) - DATABASE_URL_PARAMETERS)
        if unknown:
            supported = ", ".join(sorted(DATABASE_URL_PARAMETERS))
            names = ", ".join(unknown)
            raise ValueError(f"has unsupported query parameters {names} (supported: {supported})")
        if "ssl" in url.query and url.query["ssl"] not in SSL_MODES:
            raise ValueError(f"has ssl= outside {', '.join(SSL_MODES)}")
        if isinstance(url.query.get("host"), tuple):
            raise ValueError("names more than one host; give one host (or a PgBouncer) instead")
        return value

    @field_validator("betlink_user_id_key")
    @classmethod
    def _siv_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        _decode_keys(value, size=64)
        return value

    @field_validator("data_encryption_key")
    @classmethod
    def _gcm_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        _decode_keys(value, size=32)
        return value

    @field_validator("bidpaw_callback_signature", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("bidpaw_api_url", "betlink_redirect_url", "wallet_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def bidpaw_configured(self) -> bool:
        return bool(
            self.bidpaw_api_url and self.bidpaw_client_id and self.bidpaw_secret_key and self.bidpaw_game_id
        )

    @property
    def wallet_configured(self) -> bool:
        """BidPaw's wallet callbacks can move money: the casino's wallet and its key are set."""
        return bool(self.wallet_url and self.wallet_secret)

    @property
    def user_id_keys(self) -> list[bytes]:
        return _decode_keys(self.betlink_user_id_key, size=64)

    @property
    def encryption_keys(self) -> list[bytes]:
        return _decode_keys(self.data_encryption_key, size=32)

    @property
    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor."""
        keys = [*self.gateway_api_keys, *self.betlink_api_keys, *self.data_encryption_key]
        keys += [*self.betlink_user_id_key, *self.bidpaw_callback_secret, *self.wallet_secret]
        if self.bidpaw_secret_key is not None:
            keys.append(self.bidpaw_secret_key)
        return [key.get_secret_value() for key in keys]

    def require_complete(self) -> None:
        """Raise ConfigError naming the first required variable that is still missing."""
        required = {
            "GATEWAY_API_KEYS": self.gateway_api_keys,
            "BETLINK_API_KEYS": self.betlink_api_keys,
            "BETLINK_OPERATOR_ID": self.betlink_operator_id,
            "BETLINK_REDIRECT_URL": self.betlink_redirect_url,
            "DATA_ENCRYPTION_KEY": self.data_encryption_key,
        }
        for name, value in required.items():
            if not value:
                raise ConfigError(f"{name} is required (see .env.example)")


def _local_wallet_secrets() -> dict[str, str]:
    return {
        "BIDPAW_CALLBACK_SECRET": "cb_" + secrets.token_urlsafe(32),
        "WALLET_SECRET": "ws_" + secrets.token_urlsafe(32),
    }


def _generate_local_secrets(path: Path) -> dict[str, str]:
    """Create the local-mode secrets file once (0600) and return what it holds.

    A file from an earlier version lacks the wallet's keys: they are added to it once.
    """
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        missing = {name: value for name, value in _local_wallet_secrets().items() if name not in loaded}
        if missing:
            loaded.update(missing)
            path.write_text(json.dumps(loaded))
        return loaded
    values = {
        "GATEWAY_API_KEYS": "gw_" + secrets.token_urlsafe(32),
        "BETLINK_API_KEYS": "bl_" + secrets.token_urlsafe(32),
        "DATA_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        **_local_wallet_secrets(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(values, file)
    return values


def with_local_defaults(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """Fill what local mode may generate; return the settings and the generated values used."""
    path = settings.data_dir.resolve() / LOCAL_SECRETS_FILE
    try:
        generated = _generate_local_secrets(path)
    except OSError as exc:
        raise ConfigError(f"DATA_DIR: cannot keep local mode's secrets in {path}: {exc.strerror}") from None
    update: dict[str, Any] = {}
    used: dict[str, str] = {}
    for name, value in generated.items():
        field = name.lower()
        if not getattr(settings, field):
            update[field] = _split(value)
            used[name] = value
    if settings.betlink_operator_id is None:
        update["betlink_operator_id"] = LOCAL_OPERATOR_ID
    if settings.betlink_redirect_url is None:
        update["betlink_redirect_url"] = LOCAL_REDIRECT_URL
    return settings.model_copy(update=update), used


def describe(error: ValidationError) -> str:
    """One line naming the variable and the rule, without echoing the (possibly secret) input."""
    first = error.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "settings"
    return f"{name}: {first['msg']}"


def read_settings() -> Settings:
    """The settings as the environment gives them, validated, nothing filled in."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def load_settings(
    *, local: bool = False, command: str = "serve", service: bool = True
) -> tuple[Settings, dict[str, str]]:
    """Read, complete and validate the settings; ConfigError carries the one line to print.

    `local`: the caller asked for local mode (`--local`); only then may secrets be generated.
    `service`: the settings will serve requests, so every required secret must be present;
    `migrate` and `purge` need nothing but the database.
    """
    settings = read_settings()
    if local and settings.database_url is not None:
        raise ConfigError("DATABASE_URL is set, so --local (an embedded database) does not apply: drop one")
    if not local and settings.database_url is None:
        raise ConfigError(
            "DATABASE_URL is required; for development on this machine ask for local mode: "
            f"partner-gateway {command} --local"
        )
    generated: dict[str, str] = {}
    if local and service:
        settings, generated = with_local_defaults(settings)
    if service:
        settings.require_complete()
    return settings, generated

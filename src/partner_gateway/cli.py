"""`partner-gateway serve | migrate`: the entry points of the contract."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import SecretStr

from partner_gateway.config import ConfigError, Settings, load_settings
from partner_gateway.logs import get_logger, setup_logging

logger = get_logger("partner_gateway.cli")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through SystemExit runs
    # every `finally`, so local mode's embedded PostgreSQL is stopped too.
    raise SystemExit(0)


@contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings bound to a database: DATABASE_URL, or local mode's embedded server, migrated."""
    if not settings.local_mode:
        yield settings
        return
    from partner_gateway.embedded import embedded_postgres
    from partner_gateway.schema import upgrade

    with embedded_postgres(settings.data_dir) as url:
        logger.info("embedded postgresql started", data_dir=str(settings.data_dir))
        upgrade(url)
        yield settings.model_copy(update={"database_url": url})


def _announce(generated: dict[str, str], host: str, port: int) -> None:
    lines = [f"  {name}={value}" for name, value in generated.items() if name.endswith("_API_KEYS")]
    if not lines:
        return
    print(  # noqa: T201  (the contract's one exception: local keys are shown once at start-up)
        "partner-gateway local mode: generated keys (kept in DATA_DIR/local-secrets.json):",
        *lines,
        f"  try: curl -X POST http://{host}:{port}/betlink/session "
        f"-H 'Authorization: Bearer {generated.get('GATEWAY_API_KEYS', '<key>')}' -H 'X-User-Id: u1'",
        sep="\n",
        flush=True,
    )


UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,  # ours: JSON lines, uvicorn's included
    "access_log": False,  # our middleware writes the access line
    "timeout_graceful_shutdown": 10,
    "server_header": False,
}


def serve(settings: Settings, generated: dict[str, str], *, host: str, port: int, workers: int) -> None:
    import uvicorn

    from partner_gateway.app import create_app

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with database(settings) as bound:
        _announce(generated, host, port)
        if workers == 1:
            uvicorn.run(create_app(bound), host=host, port=port, **UVICORN_OPTIONS)
            return
        # Worker processes build their own app from the environment: hand them the resolved
        # settings (local mode's embedded URL and generated keys) as environment variables.
        os.environ.update(_as_environment(bound))
        with _metrics_directory():
            uvicorn.run(
                "partner_gateway.app:app_from_environment",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                **UVICORN_OPTIONS,
            )


@contextmanager
def _metrics_directory() -> Iterator[None]:
    """Prometheus multiprocess mode for the workers: a fresh directory for their metric files."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="partner-gateway-metrics-"))
    for stale in directory.glob("*.db"):  # counts of an earlier run must not be added again
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    try:
        yield
    finally:
        if not configured:
            shutil.rmtree(directory, ignore_errors=True)


def _as_environment(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None
    assert settings.betlink_operator_id is not None
    assert settings.betlink_redirect_url is not None
    return {
        "DATABASE_URL": settings.database_url,
        "GATEWAY_API_KEYS": _joined(settings.gateway_api_keys),
        "BETLINK_API_KEYS": _joined(settings.betlink_api_keys),
        "DATA_ENCRYPTION_KEY": _joined(settings.data_encryption_key),
        "BETLINK_OPERATOR_ID": settings.betlink_operator_id,
        "BETLINK_REDIRECT_URL": settings.betlink_redirect_url,
    }


def _joined(keys: list[SecretStr]) -> str:
    return ",".join(key.get_secret_value() for key in keys)


def migrate(settings: Settings) -> None:
    from partner_gateway.schema import upgrade

    with database(settings) as bound:
        if not settings.local_mode:
            assert bound.database_url is not None
            upgrade(bound.database_url)
    logger.info("migrations applied")


def purge(settings: Settings, *, batch: int) -> None:
    import asyncio

    from partner_gateway.db import create_engine, utc_now
    from partner_gateway.maintenance import purge_expired

    async def run(url: str) -> None:
        engine = create_engine(settings, url)
        try:
            purged = await purge_expired(engine, settings=settings, now=utc_now(), batch=batch)
        finally:
            await engine.dispose()
        logger.info("purge.done", keys=purged.keys, sessions=purged.sessions)

    with database(settings) as bound:
        assert bound.database_url is not None
        asyncio.run(run(bound.database_url))


def bidpaw_sandbox(settings: Settings, *, host: str, port: int) -> None:
    from partner_gateway.bidpaw.sandbox import run_sandbox

    if not settings.bidpaw_client_id or settings.bidpaw_secret_key is None:
        print(  # noqa: T201
            "partner-gateway: configuration error: BIDPAW_CLIENT_ID and BIDPAW_SECRET_KEY are required",
            file=sys.stderr,
        )
        raise SystemExit(2)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    run_sandbox(
        host=host,
        port=port,
        client_id=settings.bidpaw_client_id,
        secret_key=settings.bidpaw_secret_key.get_secret_value(),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partner-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the HTTP API")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1: one process per container)"
    )
    commands.add_parser("migrate", help="apply database migrations")
    purge_cmd = commands.add_parser("purge", help="delete expired idempotency keys and sessions")
    purge_cmd.add_argument("--batch", type=int, default=1000)
    sandbox_cmd = commands.add_parser(
        "bidpaw-sandbox", help="serve a local stand-in for BidPaw's open-session API"
    )
    sandbox_cmd.add_argument("--host", default="127.0.0.1")
    sandbox_cmd.add_argument("--port", type=int, default=8100)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings, generated = load_settings()
    except ConfigError as exc:
        print(f"partner-gateway: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
    setup_logging(settings)
    if args.command == "serve":
        serve(settings, generated, host=args.host, port=args.port, workers=args.workers)
    elif args.command == "migrate":
        migrate(settings)
    elif args.command == "purge":
        purge(settings, batch=args.batch)
    elif args.command == "bidpaw-sandbox":
        bidpaw_sandbox(settings, host=args.host, port=args.port)

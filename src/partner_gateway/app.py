"""The FastAPI application: create_app(settings) and a lifespan that owns every I/O resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from partner_gateway import errors, ops, players
from partner_gateway.betlink import endpoints as betlink
from partner_gateway.config import Settings
from partner_gateway.db import create_engine
from partner_gateway.security import Sealer, UserIdCipher


def create_app(settings: Settings) -> FastAPI:
    """The service, bound to `settings.database_url` (local mode resolves it before this)."""
    if settings.database_url is None:
        raise ValueError("create_app needs a database URL; local mode resolves it first")
    database_url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, database_url)
        app.state.engine = engine
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="partner-gateway",
        version="0.1.0",
        description="The casino's side of the BetLink and BidPaw integrations.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sealer = Sealer(settings.encryption_keys)
    app.state.user_id_cipher = UserIdCipher(settings.user_id_keys)
    errors.install_error_handlers(app)
    app.include_router(betlink.router)
    app.include_router(players.router)
    app.include_router(ops.router)
    return app

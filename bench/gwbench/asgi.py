"""App factories for uvicorn's `--factory` mode, imported inside the served processes.

`service` builds the service exactly as `partner-gateway serve` does (settings from the
environment, structured logging, secrets registered with the redactor, `create_app`); it is
used for several worker processes while the CLI has no `--workers` option. `trivial` is the
ceiling for the HTTP stack: one FastAPI endpoint, nothing else. `floor` is the hand-written
floor (gwbench/floor.py): the service's SQL behind minimal endpoints on a bare asyncpg pool.
`sandbox` stands in for `partner-gateway bidpaw-sandbox` when the CLI does not have that command
yet.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.applications import Starlette


def service() -> FastAPI:
    from partner_gateway.app import app_from_environment

    return app_from_environment()


def trivial() -> FastAPI:
    app = FastAPI(title="trivial")

    @app.get("/trivial")
    async def trivial_endpoint() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def floor() -> FastAPI:
    from gwbench.floor import floor_app

    return floor_app()


def sandbox() -> Starlette:
    from partner_gateway.bidpaw.sandbox import create_sandbox_app
    from partner_gateway.logs import configure_logging

    configure_logging(level=os.environ.get("LOG_LEVEL", "INFO").upper(), fmt="json")
    return create_sandbox_app(
        client_id=os.environ["BIDPAW_CLIENT_ID"], secret_key=os.environ["BIDPAW_SECRET_KEY"]
    )

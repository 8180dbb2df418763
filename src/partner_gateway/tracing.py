"""OpenTelemetry tracing, opt-in: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Spans for every request (FastAPI), every SQL statement (SQLAlchemy) and every BidPaw call
(httpx). Off, nothing is imported and nothing is wrapped. The packages come with the `otel`
extra (`pip install partner-gateway[otel]`; the container image has it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from partner_gateway.config import Settings
from partner_gateway.logs import get_logger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = get_logger(__name__)


class Tracing:
    """Instruments the app at creation, and the engine and BidPaw client when the lifespan makes them."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    def instrument_app(self, app: FastAPI) -> None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.provider, excluded_urls="healthz,readyz,metrics"
        )

    def instrument_engine(self, engine: AsyncEngine) -> None:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # Its declared range stops below SQLAlchemy 2.1, whose engine events it uses unchanged.
        SQLAlchemyInstrumentor().instrument(
            engine=engine.sync_engine, tracer_provider=self.provider, skip_dep_check=True
        )

    def instrument_client(self, client: httpx.AsyncClient) -> None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)


def setup_tracing(settings: Settings, *, exporter: SpanExporter | None = None) -> Tracing | None:
    """A Tracing exporting over OTLP (or to `exporter`, for tests), or None when tracing is off."""
    if settings.otel_exporter_otlp_endpoint is None and exporter is None:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        logger.warning("tracing.unavailable", hint="install the otel extra: partner-gateway[otel]")
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": "partner-gateway"}))
    processor: Any
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())  # reads the standard OTEL_* variables
    else:
        processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return Tracing(provider)

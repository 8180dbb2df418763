"""OpenTelemetry tracing, opt-in: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Spans for every request (FastAPI), every SQL statement (one span per store statement, named
after it, with its SQL but never its values) and every BidPaw call (httpx). Off, nothing is
imported and nothing is wrapped. The packages come with the `otel` extra (`pip install
partner-gateway[otel]`; the container image has it).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI

from partner_gateway.config import Settings
from partner_gateway.db import Database, Statement
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

    def instrument_database(self, database: Database) -> None:
        from opentelemetry.trace import SpanKind

        tracer = self.provider.get_tracer("partner_gateway.db")

        def span(statement: Statement) -> AbstractContextManager[object]:
            attributes = {
                "db.system": "postgresql",
                "db.operation.name": statement.name,
                "db.query.text": statement.sql,
            }
            return tracer.start_as_current_span(statement.name, kind=SpanKind.CLIENT, attributes=attributes)

        database.observe(span)

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

"""Tracing is opt-in: off unless configured; on, requests, SQL and BidPaw calls become spans."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from partner_gateway.app import create_app
from partner_gateway.tracing import setup_tracing
from tests.conftest import GATEWAY_HEADERS, make_settings


class TestTracing:
    def test_off_without_an_endpoint(self, database_url: str) -> None:
        assert setup_tracing(make_settings(database_url)) is None

    async def test_spans_for_requests_and_sql(self, database_url: str) -> None:
        exporter = InMemorySpanExporter()
        settings = make_settings(database_url)
        app = create_app(settings, tracing=setup_tracing(settings, exporter=exporter))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                response = await client.post(
                    "/betlink/session", headers={**GATEWAY_HEADERS, "X-User-Id": "p"}
                )
        assert response.status_code == 201
        spans = exporter.get_finished_spans()
        assert "POST /betlink/session" in [span.name for span in spans]
        sql = [span for span in spans if (span.attributes or {}).get("db.system") == "postgresql"]
        assert sql, [span.name for span in spans]
        assert not any(
            response.json()["launchToken"] in str(span.attributes) for span in exporter.get_finished_spans()
        )

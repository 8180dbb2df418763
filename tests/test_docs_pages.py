"""`/docs` and `/redoc` load nothing from another host, and DOCS_ENABLED=false turns them off."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

ClientFactory = Callable[..., Any]


def referenced_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|url)\s*[=:(]\s*['"]([^'"]+)['"]""", html)


class TestDocsPages:
    async def test_pages_reference_only_the_services_own_assets(self, client: httpx.AsyncClient) -> None:
        for page in ("/docs", "/redoc"):
            response = await client.get(page)
            assert response.status_code == 200
            urls = referenced_urls(response.text)
            assert urls, page
            assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
            assert "fonts.googleapis" not in response.text
            assert "cdn." not in response.text

    async def test_assets_are_served(self, client: httpx.AsyncClient) -> None:
        page = (await client.get("/docs")).text + (await client.get("/redoc")).text
        for url in {url for url in referenced_urls(page) if url.startswith("/docs-assets/")}:
            response = await client.get(url)
            assert response.status_code == 200, url
            assert len(response.content) > 1000, url

    async def test_docs_enabled_false_turns_the_pages_off(self, make_client: ClientFactory) -> None:
        client = await make_client(docs_enabled=False)
        for path in ("/docs", "/redoc", "/docs-assets/swagger-ui.css"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/openapi.json")).status_code == 200

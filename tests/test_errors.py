"""Every route outside BetLink's Auth endpoint answers errors as RFC 9457 problem+json."""

from __future__ import annotations

import httpx

PROBLEM = "application/problem+json"


class TestProblemJson:
    async def test_unknown_path_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/nope")
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json() == {
            "type": "about:blank",
            "title": "Not Found",
            "status": 404,
            "detail": "Not Found",
        }

    async def test_wrong_method_is_405(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/betlink/session")
        assert response.status_code == 405
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["title"] == "Method Not Allowed"
        assert "POST" in response.headers["allow"]

    async def test_wrong_method_on_authenticate_is_a_plain_405(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/betlink/authenticate")
        assert response.status_code == 405
        assert response.headers["content-type"] == PROBLEM

    async def test_openapi_describes_the_routes(self, client: httpx.AsyncClient) -> None:
        spec = (await client.get("/openapi.json")).json()
        assert "/betlink/session" in spec["paths"]
        assert {"201", "400", "401", "403", "503"} <= set(
            spec["paths"]["/betlink/session"]["post"]["responses"]
        )


class TestNoSlashRedirects:
    async def test_a_trailing_slash_is_a_404_not_a_redirect(self, client: httpx.AsyncClient) -> None:
        for method, path in (("POST", "/betlink/authenticate/"), ("POST", "/betlink/session/")):
            response = await client.request(method, path, headers={"Host": "attacker.example"})
            assert response.status_code == 404
            assert response.headers["content-type"] == PROBLEM
            assert "location" not in response.headers

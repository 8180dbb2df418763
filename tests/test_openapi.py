"""The OpenAPI description is valid 3.1 and tells a client's tools what the service really wants."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from partner_gateway.app import create_app
from tests.conftest import BETLINK_KEY, GATEWAY_HEADERS, make_settings

GATEWAY_OPERATIONS = {
    ("post", "/betlink/session"),
    ("post", "/betlink/sessions/introspect"),
    ("get", "/bidpaw/open-session"),
    ("put", "/players/{userId}/block"),
    ("delete", "/players/{userId}/block"),
}
BETLINK_OPERATIONS = {("post", "/betlink/authenticate")}
OPEN_OPERATIONS = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
BIDPAW_OPERATIONS = {("get", "/bidpaw/wallet"), ("post", "/bidpaw/wallet")}  # signed with `sign`


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = create_app(make_settings("postgresql+asyncpg://unused@/unused")).openapi()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, by_method in spec["paths"].items():
        for method, operation in by_method.items():
            yield method, path, operation


def bodies(operation: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, media type, media object) of the request body and every response body."""
    for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
        yield "request", media_type, media
    for status, response in operation["responses"].items():
        for media_type, media in response.get("content", {}).items():
            yield status, media_type, media


def header(operation: dict[str, Any], name: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = operation.get("parameters", [])
    found = [p for p in parameters if p["in"] == "header" and p["name"] == name]
    assert len(found) == 1, name
    return found[0]


class TestValidity:
    def test_validates_against_the_openapi_3_1_specification(self, spec: dict[str, Any]) -> None:
        assert spec["openapi"].startswith("3.1.")
        validate(spec, cls=OpenAPIV31SpecValidator)

    def test_describes_every_operation_of_the_contract(self, spec: dict[str, Any]) -> None:
        described = {(method, path) for method, path, _ in operations(spec)}
        assert described == GATEWAY_OPERATIONS | BETLINK_OPERATIONS | OPEN_OPERATIONS | BIDPAW_OPERATIONS


class TestSecurity:
    def test_declares_bearer_for_the_gateway_and_an_api_key_header_for_betlink(
        self, spec: dict[str, Any]
    ) -> None:
        schemes = {
            name: {k: v for k, v in scheme.items() if k != "description"}
            for name, scheme in spec["components"]["securitySchemes"].items()
        }
        assert schemes == {
            "gatewayKey": {"type": "http", "scheme": "bearer"},
            "betlinkApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }

    def test_attaches_the_scheme_to_each_operation(self, spec: dict[str, Any]) -> None:
        for method, path, operation in operations(spec):
            if (method, path) in GATEWAY_OPERATIONS:
                assert operation["security"] == [{"gatewayKey": []}], path
            elif (method, path) in BETLINK_OPERATIONS:
                assert operation["security"] == [{"betlinkApiKey": []}], path
            else:
                assert "security" not in operation, path

    def test_credentials_are_not_described_as_plain_header_parameters(self, spec: dict[str, Any]) -> None:
        # OpenAPI 3.1 tools ignore a header parameter named Authorization; the schemes say it.
        for _, path, operation in operations(spec):
            names = {p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"}
            assert not names & {"authorization", "x-api-key"}, path


class TestHeaders:
    def test_x_user_id_is_required_where_the_player_is_named(self, spec: dict[str, Any]) -> None:
        for path, method in (("/betlink/session", "post"), ("/bidpaw/open-session", "get")):
            user_id = header(spec["paths"][path][method], "X-User-Id")
            assert user_id["required"] is True
            assert user_id["schema"] == {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "title": "Player id",
            }

    def test_open_session_describes_todays_headers_and_query_with_examples(
        self, spec: dict[str, Any]
    ) -> None:
        operation = spec["paths"]["/bidpaw/open-session"]["get"]
        country = header(operation, "X-User-Country")
        currency = header(operation, "X-User-Currency")
        assert (country["required"], country["example"], country["schema"]["pattern"]) == (
            False,
            "DE",
            "^[A-Za-z]{2}$",
        )
        assert (currency["required"], currency["example"]) == (False, "EUR")
        assert len(currency["schema"]["enum"]) == 42
        assert "USDT" in currency["schema"]["enum"]
        query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        assert set(query) == {"nick", "lang"}
        assert query["lang"]["schema"]["pattern"] == "^[A-Za-z-]{2,8}$"
        assert query["lang"]["example"] == "de"
        assert query["nick"]["schema"]["maxLength"] == 256
        assert all(p.get("example") and p.get("description") for p in operation["parameters"])
        names = [(p["in"], p["name"]) for p in operation["parameters"]]
        assert len(names) == len(set(names))

    def test_idempotency_key_is_a_required_uuid(self, spec: dict[str, Any]) -> None:
        key = header(spec["paths"]["/betlink/authenticate"]["post"], "X-Idempotency-Key")
        assert key["required"] is True
        assert key["schema"]["format"] == "uuid"

    def test_no_operation_promises_a_422(self, spec: dict[str, Any]) -> None:
        for _, path, operation in operations(spec):
            assert "422" not in operation["responses"], path
        assert "HTTPValidationError" not in spec["components"]["schemas"]

    async def test_missing_headers_get_the_contracts_errors_not_422(self, client: httpx.AsyncClient) -> None:
        # Described as required, still checked by the endpoints themselves, in the contract's order.
        no_user = await client.post("/betlink/session", headers=GATEWAY_HEADERS)
        assert (no_user.status_code, no_user.json()["detail"]) == (400, "missing X-User-Id header")
        no_key = await client.post("/betlink/authenticate", headers={"X-API-Key": BETLINK_KEY}, json={})
        assert no_key.status_code == 400
        assert no_key.json() == {
            "status": "FAILED_AUTHENTICATION",
            "errorCode": "MISSING_PARAMETER",
            "errorMessage": "X-Idempotency-Key must be a UUID",
        }
        no_api_key = await client.post("/betlink/authenticate")
        assert (no_api_key.status_code, no_api_key.json()["errorCode"]) == (403, "AUTHENTICATION_FAILED")


class TestExamples:
    def test_every_request_and_response_body_has_an_example(self, spec: dict[str, Any]) -> None:
        for _, path, operation in operations(spec):
            for where, media_type, media in bodies(operation):
                assert "example" in media or media.get("examples"), (path, where, media_type)

    def test_every_json_example_matches_its_schema(self, spec: dict[str, Any]) -> None:
        checked = 0
        for _, path, operation in operations(spec):
            for where, media_type, media in bodies(operation):
                if "json" not in media_type:
                    continue
                values = [media["example"]] if "example" in media else []
                values += [example["value"] for example in media.get("examples", {}).values()]
                schema = {**media["schema"], "components": spec["components"]}
                for value in values:
                    jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
                    checked += 1
                assert values, (path, where)
        assert checked > 30

    def test_betlink_failures_show_each_invalid_session_case(self, spec: dict[str, Any]) -> None:
        media = spec["paths"]["/betlink/authenticate"]["post"]["responses"]["401"]["content"]
        messages = {e["value"]["errorMessage"] for e in media["application/json"]["examples"].values()}
        assert messages == {
            "unknown launch token",
            "the launch token has expired",
            "the launch token was already exchanged for a session token",
            "the launch token was revoked",
        }


class TestWording:
    def test_every_operation_has_a_summary_in_words(self, spec: dict[str, Any]) -> None:
        for _, path, operation in operations(spec):
            assert len(operation["summary"].split()) >= 2, path

    def test_field_titles_are_words_not_squashed_names(self, spec: dict[str, Any]) -> None:
        schemas = list(spec["components"]["schemas"].values())
        schemas += [
            media["schema"]
            for _, _, operation in operations(spec)
            for where, _, media in bodies(operation)
            if where == "request"
        ]
        for schema in schemas:
            for name, field in schema.get("properties", {}).items():
                if name != name.lower():  # camelCase on the wire: `operatorSessionToken`
                    assert " " in field["title"], (name, field["title"])

    def test_readyz_has_its_schema(self, spec: dict[str, Any]) -> None:
        ok = spec["paths"]["/readyz"]["get"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"] == {"$ref": "#/components/schemas/Readiness"}
        readiness = spec["components"]["schemas"]["Readiness"]
        assert set(readiness["properties"]) == {"status", "schemaRevision"}
        assert readiness["properties"]["schemaRevision"]["title"] == "Schema revision"
        unavailable = spec["paths"]["/readyz"]["get"]["responses"]["503"]["content"]
        assert unavailable["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}

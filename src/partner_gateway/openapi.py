"""The OpenAPI description: what the service really answers, in words a client's tools can use.

FastAPI's generated document is post-processed once:
- security schemes (HTTP bearer for the gateway key, an `X-API-Key` header for BetLink) attached
  to each operation, in place of the header parameters that OpenAPI 3.1 tools ignore;
- `X-User-Id` and `X-Idempotency-Key` described as required, with their formats. At run time
  they stay optional parameters, so FastAPI never answers 422 for them: the endpoints' own
  checks keep the contract's order and error shapes;
- a summary per operation and an example for every request and response body;
- no 422 (validation errors are 400s in the route's shape), problem+json only for problems, and
  the 413 and 500 every route may give.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, Field

from partner_gateway.errors import AUTHENTICATE_PATH, PROBLEM_JSON
from partner_gateway.security import RUNS_ITSELF, gateway_caller, player_id


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=["about:blank"])
    title: str
    status: int
    detail: str


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "model": Problem,
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        for status in statuses
    }


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
GATEWAY_SCHEME = "gatewayKey"
BETLINK_SCHEME = "betlinkApiKey"

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    GATEWAY_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "The casino gateway: `Authorization: Bearer <key>`, a key of `GATEWAY_API_KEYS`.",
    },
    BETLINK_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "BetLink's backend: a key of `BETLINK_API_KEYS` in `X-API-Key`.",
    },
}

SUMMARIES: dict[tuple[str, str], str] = {
    ("post", "/betlink/session"): "Issue a launch token for a player",
    ("post", AUTHENTICATE_PATH): "Exchange a launch token for a session token (BetLink's Auth endpoint)",
    ("post", "/betlink/sessions/introspect"): "Check an operatorSessionToken (for the wallet)",
    ("get", "/bidpaw/open-session"): "Get BidPaw's lobby link for a player",
    ("get", "/bidpaw/wallet"): "BidPaw's wallet callback, parameters in the query",
    ("post", "/bidpaw/wallet"): "BidPaw's wallet callback: charge or credit a player, exactly once",
    ("put", "/players/{userId}/block"): "Block a player and revoke their tokens",
    ("delete", "/players/{userId}/block"): "Lift a player's block",
    ("get", "/healthz"): "Liveness: the process runs",
    ("get", "/readyz"): "Readiness: the database answers and is migrated",
    ("get", "/metrics"): "Prometheus metrics",
}

# The identity headers the endpoints read themselves (raw, exactly once); see the module docstring.
_USER_ID = {
    "name": "X-User-Id",
    "in": "header",
    "required": True,
    "description": "The player's id, set by the gateway after its own login check: UTF-8, "
    "1 to 128 characters, no control characters (else 400). Sent once.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "title": "Player id"},
    "example": "u1",
}
_IDEMPOTENCY_KEY = {
    "name": "X-Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "BetLink's idempotency key: a retry with the same key and the same userId, "
    "operatorId and launchToken gets the first 200 again, byte for byte. Missing or not a UUID: "
    "400 MISSING_PARAMETER.",
    "schema": {"type": "string", "format": "uuid", "title": "Idempotency key"},
    "example": "0f8fad5b-d9cb-469f-a165-70867728950e",
}
_REPLACED_HEADERS = {"authorization", "x-api-key", "x-user-id", "x-idempotency-key"}

_PROBLEM_DETAILS = {
    400: "missing X-User-Id header",
    401: "missing or invalid gateway API key: send Authorization: Bearer <key>",
    403: "the player is blocked",
    404: "no such resource",
    413: "the request body is larger than 65536 bytes",
    500: "unexpected error",
    502: "BidPaw answered 500",
    503: "the database did not answer in time; retry",
    504: "BidPaw did not answer within 5 s",
}
_PROBLEM_DETAILS_BY_OPERATION = {
    ("/betlink/sessions/introspect", 400): "operatorSessionToken: Field required",
    ("/players/{userId}/block", 400): "user id must not contain control characters",
    ("/readyz", 503): "the database is not reachable or has no schema",
}
_BETLINK_FAILURES = {
    400: [
        ("MISSING_PARAMETER", "X-Idempotency-Key must be a UUID"),
        ("INVALID_USER", "userId does not match the session's player"),
        ("USER_BLOCKED", "the player is blocked"),
    ],
    401: [
        ("INVALID_SESSION", "unknown launch token"),
        ("INVALID_SESSION", "the launch token has expired"),
        ("INVALID_SESSION", "the launch token was already exchanged for a session token"),
        ("INVALID_SESSION", "the launch token was revoked"),
    ],
    403: [
        ("AUTHENTICATION_FAILED", "missing or invalid X-API-Key"),
        ("AUTHENTICATION_FAILED", "operatorId is not this operator's"),
        ("AUTHENTICATION_FAILED", "this X-Idempotency-Key was used for another request"),
    ],
    500: [("GENERAL_EXCEPTION", "unexpected error")],
    503: [("REQUEST_TIMED_OUT", "the database did not answer in time; retry")],
}
_METRICS_EXAMPLE = (
    "# TYPE partner_gateway_http_requests_total counter\n"
    'partner_gateway_http_requests_total{method="POST",route="/betlink/session",status="201"} 42.0\n'
)


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    spec["components"]["securitySchemes"] = SECURITY_SCHEMES
    routes = _routes_by_operation(app)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            route = routes[method, path]
            calls = _calls(route.dependant) | RUNS_ITSELF.get(route.endpoint, frozenset())
            operation["summary"] = SUMMARIES.get((method, path), operation.get("summary", ""))
            _describe_headers(operation, path=path, method=method, calls=calls)
            _describe_responses(operation, path=path, betlink=(method, path) == ("post", AUTHENTICATE_PATH))
            _add_examples(operation, schemas)
    return spec


def _routes_by_operation(app: FastAPI) -> dict[tuple[str, str], APIRoute]:
    found: dict[tuple[str, str], APIRoute] = {}
    for context in iter_route_contexts(app.routes):  # included routers, flattened
        route = context.original_route
        if isinstance(route, APIRoute) and context.path_format is not None:
            for method in context.methods or ():
                found[method.lower(), context.path_format] = route
    return found


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    """Every dependency a route runs, however deeply nested."""
    found: set[Callable[..., Any]] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.add(sub.call)
        found |= _calls(sub)
    return found


def _describe_headers(
    operation: dict[str, Any], *, path: str, method: str, calls: set[Callable[..., Any]]
) -> None:
    parameters = [
        parameter
        for parameter in operation.get("parameters", [])
        if not (parameter["in"] == "header" and parameter["name"].lower() in _REPLACED_HEADERS)
    ]
    if player_id in calls:
        parameters.append(_USER_ID)
    if (method, path) == ("post", AUTHENTICATE_PATH):
        parameters.append(_IDEMPOTENCY_KEY)
        operation["security"] = [{BETLINK_SCHEME: []}]
    elif gateway_caller in calls:
        operation["security"] = [{GATEWAY_SCHEME: []}]
    if parameters:
        operation["parameters"] = parameters
    else:
        operation.pop("parameters", None)


def _describe_responses(operation: dict[str, Any], *, path: str, betlink: bool) -> None:
    responses: dict[str, Any] = operation["responses"]
    responses.pop("422", None)
    for response in responses.values():
        content = response.get("content", {})
        if PROBLEM_JSON in content:
            content.pop("application/json", None)
    if betlink:
        for status, failures in _BETLINK_FAILURES.items():
            media = responses[str(status)]["content"]["application/json"]
            media["examples"] = {
                f"{code} ({index})" if index else code: {
                    "value": {"status": "FAILED_AUTHENTICATION", "errorCode": code, "errorMessage": message}
                }
                for index, (code, message) in enumerate(failures)
            }
        return
    extra = [500, 413] if "requestBody" in operation else [500]
    for status in extra:
        responses.setdefault(
            str(status),
            {"description": HTTPStatus(status).phrase, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}},
        )
    for key, response in responses.items():
        media = response.get("content", {}).get(PROBLEM_JSON)
        if media is not None:
            code = int(key)
            detail = _PROBLEM_DETAILS_BY_OPERATION.get((path, code), _PROBLEM_DETAILS[code])
            value = {
                "type": "about:blank",
                "title": HTTPStatus(code).phrase,
                "status": code,
                "detail": detail,
            }
            media["examples"] = {HTTPStatus(code).phrase: {"value": value}}


def _add_examples(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """An example on every body without one, from its schema's own `examples`."""
    bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
    for body in bodies:
        for media_type, media in body.get("content", {}).items():
            if "example" in media or "examples" in media:
                continue
            if media_type.startswith("text/plain"):
                media["example"] = _METRICS_EXAMPLE
                continue
            schema = _resolve(media.get("schema", {}), schemas)
            if schema.get("examples"):
                media["example"] = _in_field_order(schema["examples"][0], schema)


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        resolved: dict[str, Any] = schemas[ref.rsplit("/", 1)[1]]
        return resolved
    return schema


def _in_field_order(example: Any, schema: dict[str, Any]) -> Any:
    """JSON Schema generation sorts an example's keys; show them in the order the wire has them."""
    if not isinstance(example, dict):
        return example
    order = list(schema.get("properties", {}))
    return dict(sorted(example.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99))

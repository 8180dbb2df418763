"""OpenAPI descriptions shared by the routes: the problem+json and BetLink error shapes."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from partner_gateway.errors import PROBLEM_JSON


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


def install_openapi(app: FastAPI) -> None:
    """Describe what the service really answers: no FastAPI 422 (validation errors are 400s in
    the route's own shape), problem+json only for problems, and the 413 and 500 every route may
    give."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path, operations in spec["paths"].items():
                for method, operation in operations.items():
                    _describe(operation, betlink=path == "/betlink/authenticate" and method == "post")
            for name in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _describe(operation: dict[str, Any], *, betlink: bool) -> None:
    responses: dict[str, Any] = operation["responses"]
    responses.pop("422", None)
    for response in responses.values():
        content = response.get("content", {})
        if PROBLEM_JSON in content:
            content.pop("application/json", None)
    if betlink:
        return
    extra = [500, 413] if "requestBody" in operation else [500]
    for status in extra:
        responses.setdefault(
            str(status),
            {"description": HTTPStatus(status).phrase, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}},
        )

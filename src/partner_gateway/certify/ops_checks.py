"""Operations (health, readiness, metrics, docs, request ids) and the front proxy (`--proxy`)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from partner_gateway.certify.client import Deployment, Failed, Skipped, describe, json_or_none
from partner_gateway.certify.expectations import expect_betlink_error, expect_problem, expect_status
from partner_gateway.certify.gateway_checks import OVER_THE_CAP_BYTES, gateway_routes, padded

OVERSIZED_HEADER_BYTES = 20_000  # above the front proxy's 16 KiB per header line


# --- 5. operations ---------------------------------------------------------------------------


async def healthz(d: Deployment) -> None:
    expect_status(await d.request("GET", "/healthz"), 200, "GET /healthz")


async def readyz(d: Deployment) -> None:
    expect_status(await d.request("GET", "/readyz"), 200, "GET /readyz")


async def metrics(d: Deployment) -> None:
    response = await d.request("GET", "/metrics")
    expected = "200 Prometheus text with partner_gateway_http_requests_total"
    try:
        names = {family.name for family in text_string_to_metric_families(response.text)}
    except ValueError:
        raise Failed(expected, describe(response)) from None
    if response.status_code != 200 or "partner_gateway_http_requests" not in names:
        raise Failed(expected, describe(response))


async def docs(d: Deployment) -> None:
    page = await d.request("GET", "/docs")
    if page.status_code != 200 or not page.headers.get("content-type", "").startswith("text/html"):
        raise Failed("GET /docs: 200 text/html", describe(page))
    document = json_or_none(answer := await d.request("GET", "/openapi.json"))
    paths = document.get("paths") if isinstance(document, dict) else None
    if answer.status_code != 200 or not isinstance(paths, dict) or "/betlink/authenticate" not in paths:
        raise Failed(
            "GET /openapi.json: 200, an OpenAPI document with /betlink/authenticate", describe(answer)
        )


async def public_surface(d: Deployment) -> None:
    """What lives on --ops-url must not be served on the URL the partners reach."""
    if d.options.ops_url is None:
        raise Skipped("--ops-url not given: operations were checked on --url, so hiding them there was not")
    for path in ("/metrics", "/docs", "/openapi.json"):
        answer = await d.request("GET", d.public(path))
        expect_problem(answer, 404, probe=f"GET {path} on --url (it lives on --ops-url): ")


async def request_id(d: Deployment) -> None:
    for method, path in (("POST", "/betlink/session"), ("POST", d.public("/betlink/authenticate"))):
        sent = d.request_id()
        answer = await d.request(method, path, headers={"X-Request-ID": sent})
        if answer.headers.get("x-request-id") != sent:
            raise Failed(
                f"{method} {path}: X-Request-ID {sent} echoed", f"{answer.headers.get('x-request-id')}"
            )


# --- 6. the front proxy (--proxy): what it must do on the URL the partners reach -----------


async def proxy_user_id(d: Deployment) -> None:
    """A client's X-User-Id never reaches the service: the casino gateway alone sets it."""
    if not d.options.proxy:
        raise Skipped("--proxy not given: the URL is taken to be the service itself")
    headers = {**d.gateway(user=d.player), "X-Request-ID": d.request_id()}
    answer = await d.request("POST", d.public("/betlink/session"), headers=headers)
    expect_problem(answer, 400, probe="POST /betlink/session on --url with the gateway's key and X-User-Id: ")


async def proxy_limits(d: Deployment) -> None:
    """Oversized headers and bodies are refused on every route, in the contract's shapes."""
    if not d.options.proxy:
        raise Skipped("--proxy not given: the URL is taken to be the service itself")
    big_header = {"X-Certify-Padding": "p" * OVERSIZED_HEADER_BYTES}
    body = padded({"certify": "over the cap"})
    for method, path, _ in [("POST", "/betlink/authenticate", {}), *gateway_routes(d)]:
        for probe, extra in (
            (f"a {OVERSIZED_HEADER_BYTES}-byte header", {"headers": big_header}),
            (f"a {OVER_THE_CAP_BYTES}-byte body", {"content": body}),
        ):
            answer = await d.request(method, d.public(path), **extra)
            what = f"{method} {path} with {probe}: "
            if path == "/betlink/authenticate":
                expect_betlink_error(answer, 400, "MISSING_PARAMETER", probe=what)
            else:
                expect_problem(answer, 413 if "body" in probe else 400, probe=what)

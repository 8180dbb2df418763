"""`/docs` (Swagger UI) and `/redoc`, working offline: every asset is served by the service itself.

The assets come from the `fastapi-offline` package (maintained builds of Swagger UI and ReDoc),
mounted under `/docs-assets`; nothing is loaded from a CDN and ReDoc's web fonts stay off. A
Content-Security-Policy on both pages lets the browser load nothing from another host (ReDoc's
bundle would otherwise fetch its vendor's logo from the vendor's CDN).
`DOCS_ENABLED=false` leaves all three paths out (`/openapi.json` stays).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
# Both pages start with an inline script and use inline styles; everything else is this origin's.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SWAGGER_UI_PARAMETERS = {
    "validatorUrl": None,  # Swagger UI would otherwise send the document to an online validator
    "defaultModelsExpandDepth": 0,
    "displayRequestDuration": True,
}


def assets_directory() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install_docs_pages(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, with their scripts, styles and icon served locally."""
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_directory()), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _locked_down(
            get_swagger_ui_html(
                openapi_url="/openapi.json",
                title=f"{title}: API reference",
                swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
                swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _locked_down(
            get_redoc_html(
                openapi_url="/openapi.json",
                title=f"{title}: API reference",
                redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
                with_google_fonts=False,
            )
        )


def _locked_down(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page

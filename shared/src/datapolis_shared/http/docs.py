"""The interactive API page, ``/docs`` (Swagger UI), with its script, style
and icon served by the app itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc its fonts
from Google), so in a cluster with no internet they render blank. The assets
come from the ``fastapi-offline`` package, installed with the service, and are
served under ``/docs/assets``: a route that exposes ``/docs`` by path prefix
exposes them too. The mount is not an API operation, so the OpenAPI document
does not list it; a missing asset answers the usual problem+json 404.

There is no ``/redoc``: ReDoc's bundle fetches its maker's logo from a CDN
whatever its options, and ``/docs`` shows the same document.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
ASSETS_PATH = "/docs/assets"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
FAVICON = "favicon.png"

# Swagger UI's default validator badge asks an outside host to check the document.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"validatorUrl": None}


def assets_directory() -> str:
    """Where the installed package keeps the Swagger UI bundle."""
    return str(files("fastapi_offline") / "static")


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its OAuth2 redirect page from local assets. ``app``
    must be built with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_directory()), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        # root_path: the page still works when served under a path prefix.
        root = str(request.scope.get("root_path", ""))
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_PATH}",
            swagger_js_url=f"{root}{ASSETS_PATH}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS_PATH}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/{FAVICON}",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

"""Swagger UI (/docs) and ReDoc (/redoc) from assets installed with the package, never from a CDN.

FastAPI's own pages load Swagger UI and ReDoc from jsdelivr: on a machine without internet they stay blank
("SwaggerUIBundle is not defined"). The `fastapi-offline` package ships the same assets; we serve only its
four files, from fixed names, and keep the pages public like the schema they render. URLs respect the
root path (`uvicorn --root-path /api` behind nginx).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from serve.errors import NotFound

ASSETS_URL: Final = "/docs/assets"
_ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


def _assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install_offline_docs(app: FastAPI) -> None:
    """Add /docs, /docs/oauth2-redirect, /redoc and their assets (create the app with docs_url=None)."""
    assets = _assets_dir()
    missing = [name for name in _ASSETS if not (assets / name).is_file()]
    if missing:  # a broken install must say so at start-up, not as a blank page later
        raise RuntimeError(f"fastapi-offline is missing {', '.join(missing)} in {assets}; reinstall it")
    oauth_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth_redirect}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )

    @app.get(oauth_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        media_type = _ASSETS.get(name)
        if media_type is None:  # only the four known files: no path is ever joined from user input
            raise NotFound(f"no documentation asset {name[:80]!r}")
        return FileResponse(
            assets / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
        )

"""The FastAPI application: routers, error handlers, OpenAPI and Swagger UI.

`create_app(ctx)` is called once by the ApiServer. The OpenAPI document is served at
`/v3/api-docs` (springdoc's path, as TBMQ) and the interactive docs at `/swagger-ui/`,
with Swagger UI's files served by the API itself (swagger-ui-bundle), not from a CDN.
Each area of TBMQ's API is one module with a `router`; they are listed in ROUTERS.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from pytbmq import __version__
from pytbmq.api import auth, errors
from pytbmq.api.context import ApiContext

OPENAPI_URL = "/v3/api-docs"
SWAGGER_URL = "/swagger-ui/"


def _routers() -> list[APIRouter]:
    """Every router of the API, imported here so a new area is one line."""
    import importlib

    found = [auth.router]
    for name in ROUTER_MODULES:
        module = importlib.import_module(f"pytbmq.api.{name}")
        router = module.router
        assert isinstance(router, APIRouter), name
        found.append(router)
    return found


# Modules under pytbmq.api that define `router` (besides auth).
ROUTER_MODULES: tuple[str, ...] = (
    "credentials",
    "providers",
    "clients",
    "system",
    "sessions",
    "messages",
)


def create_app(ctx: ApiContext) -> FastAPI:
    swagger = ctx.settings.swagger_enabled
    app = FastAPI(
        title="pytbmq admin API",
        version=__version__,
        description="TBMQ-compatible REST API of the pytbmq MQTT broker. Sign in with "
        "POST /api/auth/login and send the token as `X-Authorization: Bearer <token>`.",
        openapi_url=OPENAPI_URL if swagger else None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    errors.install(app)
    for router in _routers():
        app.include_router(router)
    if swagger:
        static = Path(swagger_ui_bundle.swagger_ui_path)
        app.mount("/swagger-ui/static", StaticFiles(directory=static), name="swagger-static")

        @app.get(SWAGGER_URL, include_in_schema=False)
        async def swagger_ui() -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url=OPENAPI_URL,
                title="pytbmq admin API",
                swagger_js_url="/swagger-ui/static/swagger-ui-bundle.js",
                swagger_css_url="/swagger-ui/static/swagger-ui.css",
                swagger_favicon_url="/swagger-ui/static/favicon-32x32.png",
            )

        @app.get("/swagger-ui", include_in_schema=False)
        async def swagger_redirect() -> RedirectResponse:
            return RedirectResponse(SWAGGER_URL)

    return app

"""The web view: a FastAPI app served by uvicorn from the service's own event loop.

REST under ``/api`` reads the service's databases through the state classes (on the loop's
thread, where their connections live), WebSockets push the status bus (``/ws/status``) and
waterfall rows (``/ws/waterfall``), ``/`` serves the page. Files are served only from the
products folder; the one state-changing request (reprocess) needs the bearer token; CORS is
off. What the app may see and do of the service is a `WebContext`; it never imports the service.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse

from contimg.web import api_products, api_qa, api_status, ws
from contimg.web.context import WebContext

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"


def create_app(ctx: WebContext) -> FastAPI:
    """The web view of a running service (its databases open), seen through ``ctx``."""
    app = FastAPI(title="contimg", version="0.1", summary="Real-time continuum imaging: status, products, QA",
                  docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    app.state.ctx = ctx

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str = PathParam(pattern=r"^[a-z]+\.(js|css)$")) -> FileResponse:
        return FileResponse(STATIC / name)

    for module in (api_status, api_products, api_qa, ws):
        app.include_router(module.router)
    return app

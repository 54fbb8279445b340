"""The web view: a FastAPI app served by uvicorn from the service's own event loop.

REST under ``/api`` reads the service's databases through the state classes (on the loop's
thread, where their connections live), WebSockets push the status bus (``/ws/status``) and
waterfall rows (``/ws/waterfall``), ``/`` serves the page. Files are served only from the
products folder; the one state-changing request (reprocess) needs the bearer token; CORS is
off. What the app may see and do of the service is a `WebContext`; it never imports the service.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse

from contimg.web import api_images, api_products, api_qa, api_sky, api_status, ws
from contimg.web.context import WebContext

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"


def create_app(ctx: WebContext) -> FastAPI:
    """The web view of a running service (its databases open), seen through ``ctx``."""
    app = FastAPI(title="contimg", version="0.1", summary="Real-time continuum imaging: status, products, QA",
                  docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    app.state.ctx = ctx
    ctx.bus.waterfalls.window_s = ctx.cfg.waterfall_history_s

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/source/{name}", response_class=HTMLResponse, include_in_schema=False)
    async def source_page(name: str = PathParam(min_length=1, max_length=100, pattern=r"^[\w+\-. ]+$")) -> HTMLResponse:
        return HTMLResponse((STATIC / "source.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str = PathParam(pattern=r"^[a-z]+\.(js|css)$")) -> FileResponse:
        return FileResponse(STATIC / name)

    @app.get("/static/vendor/{name}", include_in_schema=False)
    async def vendored(name: str = PathParam(pattern=r"^[A-Za-z0-9.\-]+\.(js|css)$")) -> FileResponse:
        path = STATIC / "vendor" / name
        if not path.is_file():
            raise HTTPException(404, f"no vendored file {name}")
        return FileResponse(path, headers={"Cache-Control": "max-age=86400"})

    for module in (api_status, api_products, api_images, api_qa, api_sky, ws):
        app.include_router(module.router)
    return app

"""The narrow interface between the service and its web view. The service builds one
`WebContext` and hands it to `contimg.web.app.create_app`; the web reads state through the state
classes' read methods, listens to the status bus, and asks for the few actions it offers
(reprocess, waterfall selections) through the callables here. It never imports the service."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request, WebSocket

from contimg.bus import StatusBus, Waterfall
from contimg.config import WebConfig
from contimg.state.calregistry import CalRegistry
from contimg.state.ingest import IngestDB
from contimg.state.products import ProductsDB

__all__ = ["WebContext", "ReprocessRefused", "context_of", "ws_context_of"]


class ReprocessRefused(Exception):
    """A reprocess request the service cannot take now; ``status`` is the HTTP status (404, 409)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class WebContext:
    """What the web view may see and do of a running service (its databases open)."""

    root: Path
    cfg: WebConfig
    bus: StatusBus
    ingest: IngestDB
    products: ProductsDB
    calreg: CalRegistry
    stages: tuple[str, ...]  # the pipeline's stages, in order (for reprocess)
    health_doc: Callable[[], dict]  # what `contimg status` shows of the running service
    task_health: Callable[[], dict[str, str]]  # task -> ok / degraded / failed / stopped
    run_blocking: Callable[..., Awaitable]  # run a blocking file read off the event loop: await run_blocking(fn, *args)
    watch_waterfall: Callable[[tuple[str, str], int], None]  # a client starts (+1) / stops (-1) watching a selection
    last_waterfall: Callable[[tuple[str, str]], Waterfall | None]  # the latest rows of a selection
    reprocess: Callable[[str, str], None]  # queue a group from a stage; raises ReprocessRefused
    ws_clients: int = field(default=0)  # connected WebSocket clients (counted by the web)

    @property
    def products_root(self) -> Path:
        return (self.root / "products").resolve()

    def token(self) -> str:
        return os.environ.get("CONTIMG_WEB_TOKEN") or self.cfg.token

    def inside_products(self, path: str | Path) -> Path:
        """``path`` resolved, if it lies inside the products folder and is a file; else 404/403."""
        root = self.products_root
        p = Path(path)
        p = (root / p if not p.is_absolute() else p).resolve()
        if not p.is_relative_to(root):
            raise HTTPException(403, "only files under the products folder are served")
        if not p.is_file():
            raise HTTPException(404, "no such file")
        return p

    def product_url(self, path: str) -> str:
        return "/api/products/" + Path(path).resolve().relative_to(self.products_root).as_posix()


def context_of(request: Request) -> WebContext:
    """FastAPI dependency: the app's `WebContext`."""
    return request.app.state.ctx


def ws_context_of(ws: WebSocket) -> WebContext:
    return ws.app.state.ctx

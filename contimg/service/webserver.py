"""The web view served from the service's loop: the `WebContext` it is handed (state, bus, the few actions),
the reprocess request, the uvicorn server's task.

A part of `contimg.service.core.Service` (a mixin: it works on the service's own attributes)."""

from __future__ import annotations

import asyncio
import logging


from contimg.pipeline.stages import (STAGES, reprocess_checkpoint)
from contimg.web.context import ReprocessRefused, WebContext

log = logging.getLogger("contimg.service.core")


class WebServing:
    def reprocess(self, group_id: str, from_stage: str) -> None:
        """Queue a finished or failed group again from ``from_stage`` (the web's request);
        `ReprocessRefused` (404, 409) when it cannot be."""
        row = self.ingest.row(group_id)
        if row is None:
            raise ReprocessRefused(404, f"no group {group_id}")
        if row["state"] in ("in_progress", "collecting"):
            raise ReprocessRefused(409, f"group {group_id} is {row['state']}; try again when it is done")
        try:
            checkpoint = reprocess_checkpoint(self.root / "products" / group_id, from_stage)
        except FileNotFoundError as exc:
            raise ReprocessRefused(409, str(exc)) from None
        self.ingest.request_reprocess(group_id, checkpoint=checkpoint)
        self.wake()

    def web_context(self) -> WebContext:
        """What the web view may see and do of this service."""
        return WebContext(root=self.root, cfg=self.cfg.web, bus=self.bus, ingest=self.ingest, products=self.products,
                          calreg=self.calreg, stages=STAGES, health_doc=self.health_doc,
                          task_health=lambda: dict(self.health), run_blocking=self.workers["misc"].run,
                          watch_waterfall=self.watch_waterfall, last_waterfall=self.last_waterfall.get,
                          reprocess=self.reprocess)

    async def _web_task(self) -> None:
        import uvicorn

        from contimg.web.app import create_app

        self.web = self.web_context()
        app = create_app(self.web)
        server = uvicorn.Server(uvicorn.Config(app, host=self.cfg.web.host, port=self.cfg.web.port, log_level="warning",
                                               lifespan="off", ws_ping_interval=20))
        server.install_signal_handlers = lambda: None  # ours stop the service; it stops the server
        stopper = asyncio.ensure_future(self._stop_server_when_stopping(server))
        try:
            serving = asyncio.ensure_future(server.serve())
            while not server.started and not serving.done():
                await asyncio.sleep(0.05)
            if server.started:
                sock = server.servers[0].sockets[0].getsockname()
                self.web_port = sock[1]
                log.info("web view on http://%s:%d/", self.cfg.web.host, self.web_port)
            try:
                await serving
            except SystemExit:  # uvicorn exits the process when it cannot bind: make it a task failure
                raise RuntimeError(f"web view cannot listen on {self.cfg.web.host}:{self.cfg.web.port} "
                                   f"(in use? set web.port)") from None
        finally:
            stopper.cancel()
            self.web_port = None

    async def _stop_server_when_stopping(self, server) -> None:
        await self.stopping.wait()
        server.should_exit = True

"""A real service with its web view, running in a background thread for the web tests."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path


class ServiceThread:
    """`Service.run()` in its own thread and event loop (as `contimg serve` runs it)."""

    def __init__(self, root: Path, cfg, *, watch: bool = True):
        from contimg.service.core import Service

        self.svc = Service(root, cfg, mode="serve", watch_dir=root / "incoming" if watch else None,
                           install_signal_handlers=False, web=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.loop = asyncio.new_event_loop()
            self.code = self.loop.run_until_complete(self.svc.run())
        except BaseException as exc:  # noqa: BLE001 - reported by start()/stop()
            self.error = exc

    def start(self, timeout: float = 60) -> "ServiceThread":
        self.thread.start()
        t_end = time.time() + timeout
        while self.svc.web_port is None:
            if self.error or not self.thread.is_alive():
                raise RuntimeError(f"service did not start: {self.error!r}")
            if time.time() > t_end:
                raise TimeoutError("web view did not come up")
            time.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.svc.web_port}"

    def stop(self, timeout: float = 60) -> int | None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.svc.request_stop)
        self.thread.join(timeout)
        if self.error:
            raise self.error
        return self.code

"""Watch a folder for complete subband files.

A scan of the folder at start-up, then inotify events (through watchfiles) that wake a scan at
once, with a periodic scan underneath as the fallback where inotify is missing (network file
systems) or disabled. A file is handed over only when it is *settled*: its name is a complete
subband name (``_incomplete`` files are ignored) and its size and mtime have not changed for
``settle_s`` — a file still being copied in is left for a later scan.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from contimg.io.naming import parse_subband_name

log = logging.getLogger(__name__)
logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every batch of changes at INFO

__all__ = ["FolderWatcher", "settled_files"]


def settled_files(folder: Path, *, seen: dict[str, tuple[int, float]], done: set[str], settle_s: float,
                  now: float | None = None) -> list[tuple[Path, os.stat_result]]:
    """One scan: subband files in ``folder`` not in ``done`` whose size and mtime equal the
    previous scan's (``seen``, updated in place) and are at least ``settle_s`` old."""
    now = time.time() if now is None else now
    out = []
    present = set()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name in done or parse_subband_name(entry.name) is None:
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        if not entry.is_file():
            continue
        present.add(entry.name)
        sig = (st.st_size, st.st_mtime)
        previous = seen.get(entry.name)
        seen[entry.name] = sig
        stable = previous == sig or settle_s == 0
        if stable and st.st_size > 0 and now - st.st_mtime >= settle_s:
            out.append((Path(entry.path), st))
    for name in list(seen):
        if name not in present:
            del seen[name]
    return out


class FolderWatcher:
    """Calls ``on_file(path, stat)`` once for every settled subband file in ``folder``."""

    def __init__(self, folder: Path, *, settle_s: float, poll_interval_s: float, use_inotify: bool):
        self.folder = Path(folder)
        self.settle_s = settle_s
        self.poll_interval_s = poll_interval_s
        self.use_inotify = use_inotify
        self.done: set[str] = set()
        self._seen: dict[str, tuple[int, float]] = {}
        self._changed = asyncio.Event()
        self.backend = "polling"

    def scan_once(self, on_file: Callable[[Path, os.stat_result], None]) -> int:
        files = settled_files(self.folder, seen=self._seen, done=self.done, settle_s=self.settle_s)
        for path, st in sorted(files):
            on_file(path, st)
            self.done.add(path.name)
            self._seen.pop(path.name, None)
        return len(files)

    async def _inotify(self, stop: asyncio.Event) -> None:
        try:
            import watchfiles
        except ImportError:
            log.warning("watchfiles is not installed: polling %s every %.1f s", self.folder, self.poll_interval_s)
            return
        try:
            async for _ in watchfiles.awatch(self.folder, stop_event=stop, debounce=200, step=50,
                                             recursive=False):
                self._changed.set()
        except (OSError, RuntimeError) as exc:  # no inotify here (e.g. limits, network fs): poll
            log.warning("inotify unavailable for %s (%s): polling every %.1f s", self.folder, exc,
                        self.poll_interval_s)
            self.backend = "polling"

    async def run(self, on_file: Callable[[Path, os.stat_result], None], stop: asyncio.Event) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        notifier = None
        if self.use_inotify:
            self.backend = "inotify"
            notifier = asyncio.create_task(self._inotify(stop), name="inotify")
        try:
            while not stop.is_set():
                self.scan_once(on_file)
                # wake on an inotify event (then once more after settle_s) or at the poll period
                timeout = self.poll_interval_s
                if self._seen:  # files seen but not settled yet: look again soon
                    timeout = min(timeout, max(self.settle_s, 0.05))
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout)
                except TimeoutError:
                    pass
                self._changed.clear()
        finally:
            if notifier is not None:
                notifier.cancel()

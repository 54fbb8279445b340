"""Process plumbing for the service: long-lived worker threads, the one-service-per-root lock,
atomic JSON files, the state databases' connection settings."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlite_utils

__all__ = ["Worker", "RootLock", "ServiceLockError", "service_running", "write_json", "open_state_db"]


class ServiceLockError(RuntimeError):
    """Another service already runs on this root."""


def _settle(fut: asyncio.Future, result, exc) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def write_json(path: Path, doc: dict) -> None:
    """Write ``doc`` to ``path`` under a temporary name, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


class Worker:
    """One long-lived daemon thread that runs jobs one at a time; ``await worker.run(fn, *args)``.

    Long-lived, so that a service running for months does not make a thread (and a malloc
    arena) per group; daemon, so that a stage still running past the shutdown grace never holds
    up the process's exit (its group resumes from its checkpoint).
    """

    def __init__(self, name: str, *, nice: int = 0):
        self.name = name
        self.nice = nice
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self.busy = False

    def _loop(self) -> None:
        if self.nice:
            # Linux niceness is per thread and inherited by the threads this one starts (the h5py
            # pool, numba's and ducc0's): under load the scheduler then favours the event loop
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
            except (OSError, AttributeError):  # not Linux: leave it
                pass
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, fut, loop = job
            self.busy = True
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, fut, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, fut, result, None)
            finally:
                self.busy = False

    def run(self, fn: Callable, *args) -> Awaitable:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._jobs.put((fn, args, fut, loop))
        return fut

    def close(self) -> None:
        self._jobs.put(None)


class RootLock:
    """An exclusive ``flock`` on ``<root>/state/service.lock``: one service per root."""

    def __init__(self, root: Path):
        self.path = Path(root) / "state" / "service.lock"
        self._fh = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise ServiceLockError(f"another contimg service (pid {holder}) holds {self.path}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    @staticmethod
    def held(root: Path) -> bool:
        path = Path(root) / "state" / "service.lock"
        if not path.exists():
            return False
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False


def service_running(root: Path) -> bool:
    """Whether a service holds ``root``'s lock now."""
    return RootLock.held(root)




def open_state_db(path: str | Path, *, busy_timeout_ms: int | None = None) -> sqlite_utils.Database:
    """One of the SQLite state databases (ingest, products, calibration registry), its folder
    made. WAL with synchronous=NORMAL: a commit does not wait for fsync (checkpoints do); the
    database stays consistent through a crash of the process or the machine, and only a power
    loss can drop the last commits. Commits run on the event loop's thread, where a busy disk's
    fsync stalled it for up to half a second."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(path)
    db.enable_wal()
    db.execute("PRAGMA synchronous = NORMAL")
    if busy_timeout_ms is not None:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return db

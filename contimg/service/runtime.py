"""Process plumbing for the service: long-lived worker threads, atomic JSON files."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["Worker", "write_json", "fix_malloc_mmap_threshold"]

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def fix_malloc_mmap_threshold(mib: float) -> bool:
    """Fix glibc's mmap threshold at ``mib`` MiB (mallopt M_MMAP_THRESHOLD): every block at
    least that large is its own mapping, given back to the OS the moment it is freed. By default
    glibc raises the threshold (up to 32 MiB) each time such a block is freed, after which the
    service's many 1–32 MiB numpy temporaries live in the threads' heaps, which a long-running
    process does not give back. False where there is no glibc (or ``mib`` is 0: left as it is)."""
    if mib <= 0:
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mib * 2**20)))
    except (OSError, AttributeError):
        return False


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
                # drop this job's references now: an idle worker must not keep its last group (its
                # images, its visibilities) alive until the next job arrives
                job = fn = args = fut = loop = result = None

    def run(self, fn: Callable, *args) -> Awaitable:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._jobs.put((fn, args, fut, loop))
        return fut

    def close(self) -> None:
        self._jobs.put(None)

"""One service per root: an exclusive ``flock`` on ``<root>/state/service.lock``."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["RootLock", "ServiceLockError", "service_running"]


class ServiceLockError(RuntimeError):
    """Another service already runs on this root."""


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

"""Host↔device traffic of one group: a byte counter the stages add to when they move arrays
between the host and the device, and the moves themselves.

A group is uploaded once (`upload`, `upload_flags`: flags go bit-packed, 1 bit a sample) and
what comes back is small (`download`; `download_flags`, bit-packed again); the counter
(`TransferCounter`, one per `VisChunk`) records both directions per label, so
``tools/bench_gpu.py`` and the tests can hold the traffic to the group's visibility bytes.

``xp`` is the array module of the device path: cupy on a device, or `contimg.device.backend.TWIN`
(numpy standing in for cupy: the device path's array code run on the host, the moves counted as
if they crossed a bus, so CI measures the traffic a device would see). With numpy itself nothing
moves and nothing is counted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from contimg.device.backend import is_device

__all__ = ["TransferCounter", "upload", "download", "upload_flags", "download_flags", "compact"]

_LOCK = threading.Lock()  # one for all counters (adds are rare: a few per stage); keeps them picklable


@dataclass
class TransferCounter:
    """Bytes moved host → device (``h2d``) and device → host (``d2h``), in total and per label."""

    h2d: int = 0
    d2h: int = 0
    by_label: dict[str, int] = field(default_factory=dict)  # "h2d:vis" -> bytes

    def add(self, direction: str, nbytes: int, label: str = "") -> None:
        if direction not in ("h2d", "d2h"):
            raise ValueError(f"direction {direction!r} (h2d or d2h)")
        with _LOCK:
            setattr(self, direction, getattr(self, direction) + int(nbytes))
            key = f"{direction}:{label or '?'}"
            self.by_label[key] = self.by_label.get(key, 0) + int(nbytes)

    def as_dict(self) -> dict:
        """JSON-ready: {"h2d": bytes, "d2h": bytes, "by_label": {...}}."""
        with _LOCK:
            return {"h2d": self.h2d, "d2h": self.d2h, "by_label": dict(self.by_label)}


def _is_host(arr) -> bool:
    return isinstance(arr, np.ndarray) or np.isscalar(arr)


def compact(arr):
    """(the distinct elements of ``arr``, its shape): a broadcast view (a zero stride, as
    `np.broadcast_to` makes) without its repeated axes, which have length 1 instead; any other
    array is its own compact form."""
    strides = getattr(arr, "strides", None)
    if not strides or 0 not in strides:
        return arr, None
    return arr[tuple(slice(0, 1) if st == 0 else slice(None) for st in strides)], arr.shape


def upload(arr, *, xp, counter: TransferCounter | None = None, label: str = ""):
    """``arr`` on the device of ``xp`` (a no-op for numpy, and for an array already there);
    the bytes that cross are added to ``counter`` under ``label``. A broadcast view (uniform
    weights) crosses as its distinct elements and is broadcast again on the device."""
    if not is_device(xp):
        return arr
    base, shape = compact(arr)
    out = xp.asarray(base)
    if counter is not None and _crosses_up(arr, xp):
        counter.add("h2d", np.asarray(base).nbytes if _is_host(base) else base.nbytes, label)
    return out if shape is None else xp.broadcast_to(out, shape)


def _crosses_up(arr, xp) -> bool:
    """Whether moving ``arr`` onto ``xp``'s device crosses the bus: a host array onto a device
    (for the twin, every move the device path asks for is counted, since host and "device"
    arrays are both numpy there)."""
    if getattr(xp, "TWIN", False):
        return True
    return _is_host(arr)


def download(arr, *, xp, counter: TransferCounter | None = None, label: str = "") -> np.ndarray:
    """``arr`` as a numpy array; the bytes are counted when ``arr`` lives on ``xp``'s device."""
    if not is_device(xp):
        return np.asarray(arr)
    base, shape = compact(arr)
    host = base.get() if hasattr(base, "get") else np.asarray(base)
    if counter is not None and (getattr(xp, "TWIN", False) or not _is_host(base)):
        counter.add("d2h", host.nbytes, label)
    return host if shape is None else np.broadcast_to(host, shape)


def upload_flags(flags: np.ndarray, *, xp, counter: TransferCounter | None = None, label: str = "flags"):
    """A bool array onto the device as bits (np.packbits on the host, unpacked on the device):
    1/8 of its bytes cross. Device arrays and numpy (no device) pass through."""
    if not is_device(xp) or not (_is_host(flags) or getattr(xp, "TWIN", False)):
        return flags
    flags = np.asarray(flags, bool)
    packed = np.packbits(flags, axis=None)
    dev = xp.asarray(packed)
    if counter is not None:
        counter.add("h2d", packed.nbytes, label)
    return xp.unpackbits(dev)[:flags.size].astype(bool).reshape(flags.shape)  # cupy's unpackbits has no count


def download_flags(flags, *, xp, counter: TransferCounter | None = None, label: str = "flags") -> np.ndarray:
    """A device bool array as a numpy one, bit-packed on the device and unpacked on the host:
    1/8 of its bytes cross. Host arrays (numpy, no device) pass through uncounted."""
    if not is_device(xp) or (_is_host(flags) and not getattr(xp, "TWIN", False)):
        return np.asarray(flags)
    packed = xp.packbits(flags.ravel())
    host = packed.get() if hasattr(packed, "get") else np.asarray(packed)
    if counter is not None:
        counter.add("d2h", host.nbytes, label)
    return np.unpackbits(host, count=flags.size).view(bool).reshape(flags.shape)

"""Host memory pages of large arrays: given back to the operating system while the array is
still referenced (`release_pages`), and made resident in one call before they are written
(`populate_pages`, `mapped_empty`, `empty_resident`).

A real-size group's two-polarization visibilities are 1.25 GiB; the image stage reads them once,
integration by integration, into Stokes I. `release_pages` hands the whole pages of what has been
read back to the kernel (``madvise(MADV_DONTNEED)``: resident memory drops at once, and the pages
read as zeros if touched again), so the group's peak is the larger of the two forms, not their
sum. Linux only; elsewhere it releases nothing and says so (returns 0).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys

import numpy as np

__all__ = ["release_pages", "populate_pages", "mapped_empty", "empty_resident", "POPULATE_MIN_BYTES"]

_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4  # Linux
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    except OSError:  # pragma: no cover - a Linux without a C library to load
        _libc = None


def release_pages(arr: np.ndarray) -> int:
    """Return the whole memory pages inside ``arr`` (a C-contiguous numpy array or view) to the
    operating system; its values there read as 0 afterwards. The pages at its ends that it
    shares with other memory are kept. Returns the bytes released (0 off Linux, for a
    non-contiguous or small array)."""
    span = _page_span(arr) if _libc is not None else None
    if span is None or _libc.madvise(ctypes.c_void_p(span[0]), ctypes.c_size_t(span[1]), _MADV_DONTNEED) != 0:
        return 0
    return span[1]


# madvise(MADV_POPULATE_WRITE): Linux 5.14 (EINVAL before)
_MADV_POPULATE_WRITE = 23
# smaller arrays: np.empty (a mapping of their own is not worth a system call or two)
POPULATE_MIN_BYTES = 64 * 2**20


def _page_span(arr: np.ndarray) -> tuple[int, int] | None:
    """The whole pages inside a C-contiguous array: (first address, length), or None."""
    if not isinstance(arr, np.ndarray) or not arr.flags.c_contiguous or arr.nbytes < 2 * _PAGE:
        return None
    start = arr.ctypes.data
    first = -(-start // _PAGE) * _PAGE
    last = (start + arr.nbytes) // _PAGE * _PAGE
    return (first, last - first) if last > first else None


def populate_pages(arr: np.ndarray) -> int:
    """Make the whole pages inside ``arr`` (a C-contiguous numpy array or view) resident and
    writable in one call (``madvise(MADV_POPULATE_WRITE)``) rather than one page fault at a time
    as it is written; its values are unchanged. Returns the bytes populated (0 off Linux, before
    Linux 5.14, for a non-contiguous or small array)."""
    span = _page_span(arr) if _libc is not None else None
    if span is None or _libc.madvise(ctypes.c_void_p(span[0]), ctypes.c_size_t(span[1]), _MADV_POPULATE_WRITE) != 0:
        return 0
    return span[1]


def mapped_empty(shape: tuple[int, ...], dtype, *, populate: bool) -> np.ndarray:
    """A C-ordered numpy array, its contents undefined, in an anonymous mapping of its own
    (unmapped when the array and every view of it are gone), with no transparent huge pages
    asked for (numpy asks for them on a large ``np.empty``); ``populate``: every page resident at
    once (`populate_pages`), otherwise the caller populates the parts it is about to write.
    ``np.empty`` off Linux.

    Why (the development VM, a gVisor sandbox; docs/benchmarks/bench.md): a real-size group's
    1.4 GB, its memory not used for a few seconds, took 3.3 s to fill as an ``np.empty`` (huge
    pages faulted one at a time), 0.5-1.1 s as a mapping without them, 0.4-1.0 s populated in
    one call and then filled; populating huge pages took as long as faulting them."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if _libc is None or nbytes == 0:
        return np.empty(shape, dtype)
    out = np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), dtype).reshape(shape)
    if populate:
        populate_pages(out)
    return out


def empty_resident(shape: tuple[int, ...], dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` for an array about to be filled whole: at least
    `POPULATE_MIN_BYTES` come populated (`mapped_empty`), anything smaller from ``np.empty``."""
    if np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64)) >= POPULATE_MIN_BYTES:
        return mapped_empty(shape, dtype, populate=True)
    return np.empty(shape, dtype)

"""Giving a large array's memory back to the operating system while the array is still referenced.

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

__all__ = ["release_pages"]

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
    if _libc is None or not isinstance(arr, np.ndarray) or not arr.flags.c_contiguous or arr.nbytes < 2 * _PAGE:
        return 0
    start = arr.ctypes.data
    first = -(-start // _PAGE) * _PAGE
    last = (start + arr.nbytes) // _PAGE * _PAGE
    if last <= first:
        return 0
    if _libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED) != 0:
        return 0
    return last - first

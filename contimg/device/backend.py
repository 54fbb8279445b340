"""Which array module runs device code: cupy when a CUDA device is usable, else numpy.

Array code written against ``xp`` takes the module as a keyword (``xp=np`` or ``xp=cupy``), so
the same function runs on the host in CI and on the device where one is present.
"""

from __future__ import annotations

import functools
from types import ModuleType

import numpy as np

from contimg.device.memory import empty_resident

__all__ = ["gpu_available", "array_module", "to_host", "is_device", "module_name", "host_empty", "TWIN"]


class _Twin(ModuleType):
    """numpy standing in for cupy: every attribute is numpy's, but ``TWIN is not numpy``, so code
    that takes its device path where ``xp is not np`` runs that path's array code on the host.
    The tests run the whole device chain with it (stage backend "twin")."""

    TWIN = True

    def __getattr__(self, name):
        return getattr(np, name)


TWIN = _Twin("contimg_twin_numpy", "numpy as a stand-in for cupy (the device path's array code on the host)")


def module_name(xp) -> str:
    """"numpy", "cupy" or "twin": what `array_module` takes back (for a picklable record)."""
    if xp is np:
        return "numpy"
    if xp is TWIN:
        return "twin"
    return xp.__name__


def is_device(xp) -> bool:
    """Whether ``xp`` is a device path's array module: cupy, or the twin (`TWIN`)."""
    return xp is not np


@functools.cache
def gpu_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device: all mean "no GPU"
        return False


def array_module(backend: str) -> ModuleType:
    """``numpy`` for "cpu"; ``cupy`` for "gpu" (raises when there is none); "auto" picks cupy
    when a device is usable; "twin": `TWIN` (the device path's array code on numpy, for tests)."""
    if backend == "twin":
        return TWIN
    if backend == "cpu" or (backend == "auto" and not gpu_available()):
        return np
    if backend in ("gpu", "auto"):
        if not gpu_available():
            raise RuntimeError("backend 'gpu' asked for, but cupy finds no CUDA device")
        import cupy

        return cupy
    raise ValueError(f"unknown backend {backend!r} (cpu, gpu, auto or twin)")


def to_host(arr):
    """A numpy array from a numpy or cupy array."""
    return arr.get() if hasattr(arr, "get") else np.asarray(arr)


def host_empty(shape: tuple[int, ...], dtype, *, xp=np) -> np.ndarray:
    """A host (numpy) array to fill, its contents undefined, and then upload to ``xp``'s device:
    page-locked (pinned) memory for cupy, which the copy engine reads at the bus's full speed
    without a staging copy; for numpy (and the twin) `contimg.device.memory.empty_resident` (a
    large array's pages resident at once)."""
    if xp is np or getattr(xp, "TWIN", False):
        return empty_resident(shape, dtype)
    import cupyx

    return cupyx.empty_pinned(shape, dtype)

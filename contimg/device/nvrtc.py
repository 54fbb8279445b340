"""The CUDA sources in ``kernels/`` (package data ``contimg/kernels``): loading them into CuPy
on a device, and compiling them with NVRTC where there is none.

`raw_module` is what the GPU paths use (CuPy compiles with NVRTC for the device it runs on and
caches the result). `nvrtc_compile` compiles a source to PTX for a named architecture with
NVRTC alone — no driver, no device — so that the test suite checks on every machine that each
kernel compiles (tests/test_kernels.py); it needs the ``nvidia-cuda-nvrtc-cu12`` wheel (in the
``test`` extra) and raises `NvrtcUnavailable` without it.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from pathlib import Path

__all__ = ["KERNEL_DIR", "kernel_names", "kernel_source", "raw_module", "nvrtc_compile", "NvrtcUnavailable",
           "NvrtcError"]

KERNEL_DIR = Path(__file__).parent.parent / "kernels"
_OPTIONS = ("--std=c++14",)


class NvrtcUnavailable(RuntimeError):
    """No NVRTC library on this machine."""


class NvrtcError(RuntimeError):
    """A kernel did not compile; the message holds NVRTC's log."""


def kernel_names() -> list[str]:
    """The CUDA sources shipped with contimg (file names)."""
    return sorted(p.name for p in KERNEL_DIR.glob("*.cu"))


def kernel_source(name: str) -> str:
    path = KERNEL_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"CUDA source {path} is missing (the package was installed without kernels/)")
    return path.read_text()


def _define_options(defines: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    return tuple(f"-D{k}={v}" for k, v in defines)


@functools.cache
def raw_module(name: str, defines: tuple[tuple[str, int], ...] = ()):
    """A ``cupy.RawModule`` of ``kernels/<name>`` (compiled once per process and definitions)."""
    import cupy

    return cupy.RawModule(code=kernel_source(name), options=_OPTIONS + _define_options(defines))


@functools.cache
def _nvrtc() -> ctypes.CDLL:
    candidates = []
    spec = importlib.util.find_spec("nvidia.cuda_nvrtc") if importlib.util.find_spec("nvidia") else None
    if spec is not None:
        for loc in spec.submodule_search_locations or []:
            candidates += sorted(Path(loc, "lib").glob("libnvrtc.so*"))
    candidates += ["libnvrtc.so.12", "libnvrtc.so"]
    for cand in candidates:
        try:
            return ctypes.CDLL(str(cand))
        except OSError:
            continue
    raise NvrtcUnavailable("no NVRTC library (pip install nvidia-cuda-nvrtc-cu12)")


def nvrtc_compile(name: str, *, arch: str = "compute_90", defines: tuple[tuple[str, int], ...] = ()) -> str:
    """PTX of ``kernels/<name>`` for ``arch``; raises `NvrtcError` with the compiler's log."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    src = kernel_source(name).encode()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src, name.encode(), 0, None, None)
    if rc:
        raise NvrtcError(f"nvrtcCreateProgram({name}) returned {rc}")
    try:
        opts = [o.encode() for o in (*_OPTIONS, f"--gpu-architecture={arch}", *_define_options(defines))]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        if rc:
            raise NvrtcError(f"kernels/{name} does not compile for {arch}:\n{log.value.decode(errors='replace')}")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))

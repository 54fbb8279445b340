"""The CUDA sources in ``kernels/`` (package data ``contimg/kernels``): loading them into CuPy
on a device, and compiling them with NVRTC where there is none.

`raw_module` is what the GPU paths use (CuPy compiles with NVRTC for the device it runs on and
caches the result). `nvrtc_compile` compiles a source to PTX for a named architecture with
NVRTC alone — no driver, no device — so that the test suite checks on every machine that each
kernel compiles (tests/test_wgrid.py); it uses cuda-python's NVRTC bindings
(``cuda-bindings``) with the ``nvidia-cuda-nvrtc-cu12`` library (both in the ``test`` extra) and
raises `NvrtcUnavailable` without them.
"""

from __future__ import annotations

import functools
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


def _nvrtc():
    """cuda-python's NVRTC bindings (``cuda.bindings.nvrtc``; it finds the library of the
    ``nvidia-cuda-nvrtc`` wheel or the system's CUDA)."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise NvrtcUnavailable(f"no NVRTC bindings ({exc}): pip install 'cuda-bindings>=12.8,<13' "
                               "nvidia-cuda-nvrtc-cu12") from None
    return nvrtc


def _check(result, what: str):
    """The values after an NVRTC call's status, or `NvrtcError` naming the call."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        raise NvrtcError(f"{what} returned {status}")
    return values[0] if len(values) == 1 else values


def nvrtc_compile(name: str, *, arch: str = "compute_90", defines: tuple[tuple[str, int], ...] = ()) -> str:
    """PTX of ``kernels/<name>`` for ``arch``; raises `NvrtcError` with the compiler's log."""
    nvrtc = _nvrtc()
    try:
        prog = _check(nvrtc.nvrtcCreateProgram(kernel_source(name).encode(), name.encode(), 0, [], []),
                      f"nvrtcCreateProgram({name})")
    except RuntimeError as exc:  # the library itself could not be loaded
        if isinstance(exc, NvrtcError):
            raise
        raise NvrtcUnavailable(f"NVRTC cannot be loaded ({exc}): pip install nvidia-cuda-nvrtc-cu12") from None
    try:
        opts = [o.encode() for o in (*_OPTIONS, f"--gpu-architecture={arch}", *_define_options(defines))]
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log = b" " * size
        _check(nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        if int(status) != 0:
            text = log.rstrip(b" \0").decode(errors="replace")
            raise NvrtcError(f"kernels/{name} does not compile for {arch}:\n{text}")
        size = _check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
        ptx = b" " * size
        _check(nvrtc.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        return ptx.rstrip(b"\0").decode()
    finally:
        nvrtc.nvrtcDestroyProgram(prog)

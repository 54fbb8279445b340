"""The w-stacking gridder's plan and each visibility's kernel position (`contimg.imaging.wgrid`):
grid size, kernel support and shape for an accuracy, the w planes, and the start cell and
offset of every visibility in u, v and w, as array code on ``xp``."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from scipy.fft import next_fast_len

from contimg.sky.geometry import C_M_S

__all__ = ["OVERSAMPLING", "GridPlan", "plan_grid", "kernel_support", "es_kernel_ft", "prepare_visibilities",
           "Prepared", "w_range"]

OVERSAMPLING = 2.0

# Kernel support W and shape beta per accuracy for an oversampling of 2. beta = 2.3 W
# (Barnett et al. 2019); W measured against a direct DFT of a three-dimensional (u, v, w)
# problem (tests/test_wgrid.py): the relative L2 error of the dirty image stays below epsilon.
_SUPPORT = ((1e-2, 4), (1e-3, 5), (1e-4, 6), (1e-5, 7), (1e-6, 8))


def kernel_support(epsilon: float) -> tuple[int, float]:
    """(W, beta) for a relative accuracy ``epsilon`` (1e-2 … 1e-6)."""
    if not 1e-6 <= epsilon <= 1e-1:
        raise ValueError(f"gridder epsilon {epsilon:g} is outside 1e-6 … 1e-1")
    w = next(w for eps, w in _SUPPORT if epsilon >= eps)
    return w, 2.3 * w


def es_kernel_ft(xi, *, support: int, beta: float, xp: ModuleType = np):
    """The kernel's Fourier transform ``int phi(2t/W) exp(2 pi i t xi) dt`` (t in cells, xi in
    cycles per cell): (W/2) int_-1^1 phi(z) cos(pi W xi z) dz by 64-point Gauss-Legendre
    quadrature (1e-8 relative for |xi| <= 1/4, W >= 4). xi: any shape, float64 of ``xp``."""
    z, wq = np.polynomial.legendre.leggauss(64)
    phi = np.exp(beta * (np.sqrt(1 - z * z) - 1)) * wq
    xi = xp.asarray(xi, dtype=xp.float64)
    out = xp.zeros(xi.shape, xp.float64)
    for zk, pk in zip(z, phi):  # node by node: no (xi.size, 64) temporary for a 4096² image
        out += pk * xp.cos((np.pi * support * zk) * xi)
    return (support / 2) * out


@dataclass(frozen=True)
class GridPlan:
    """Sizes and constants of one gridding: image npix², uv grid ngrid², w planes."""

    npix: int
    cell_rad: float
    ngrid: int
    support: int
    beta: float
    nm1_shift: float  # s: the image-plane n - 1 is used as (n - 1 + s), centred on 0
    dw: float  # w-plane spacing, wavelengths
    w0: float  # w of plane 0, wavelengths
    nplanes: int


def _nm1_image(npix: int, cell_rad: float, xp: ModuleType = np):
    """n - 1 at every pixel (npix, npix) float64, FITS order."""
    a = (xp.arange(npix, dtype=xp.float64) - npix / 2) * cell_rad
    r2 = a[:, None] ** 2 + a[None, :] ** 2
    return -r2 / (xp.sqrt(xp.maximum(1 - r2, 0)) + 1)  # sqrt(1 - r2) - 1, without cancellation


def _even_fast_len(n: int) -> int:
    """The smallest even FFT-friendly size >= n (scipy's choice; cuFFT is fast on the same)."""
    m = next_fast_len(n, real=False)
    while m % 2:
        m = next_fast_len(m + 1, real=False)
    return m


def plan_grid(*, npix: int, cell_rad: float, epsilon: float, w_min: float, w_max: float) -> GridPlan:
    """The plan for an image npix² of ``cell_rad`` and |w| in [w_min, w_max] wavelengths."""
    if npix % 2:
        raise ValueError(f"gridder: npix must be even, got {npix}")
    support, beta = kernel_support(epsilon)
    ngrid = _even_fast_len(int(np.ceil(max(OVERSAMPLING * npix, 2 * support))))
    nm1 = _nm1_image(npix, cell_rad)
    lo, hi = float(nm1.min()), float(nm1.max())
    shift = -(lo + hi) / 2
    half_range = max((hi - lo) / 2, 1e-12)
    dw = 1 / (2 * OVERSAMPLING * half_range)  # |dw (n - 1 + s)| <= 1 / (2 sigma): the kernel's accurate band
    w0 = w_min - dw * (support - 1) / 2
    nplanes = int(np.ceil((w_max - w0) / dw - support / 2)) + support
    return GridPlan(npix=npix, cell_rad=cell_rad, ngrid=ngrid, support=support, beta=beta, nm1_shift=shift,
                    dw=dw, w0=w0, nplanes=max(nplanes, support))


@dataclass
class Prepared:
    """Each (row, channel) visibility's kernel position, flattened; arrays of ``xp``.

    Grid coordinate x (cells) is split as start cell ``i0 = ceil(x - W/2)`` (int32) and offset
    ``f = i0 - x`` (float32, in (-W/2, 1 - W/2]): float32 keeps the offset exact where the
    coordinate itself (up to ngrid/2) would lose a few 1e-4 cells. The kernel weights are
    ``phi((f + i) / (W/2))``, i = 0 … W-1."""

    index: object  # (nvis,) int32 (int64 beyond 2^31) flat index into (nrow, nchan)
    iu: object
    fu: object
    iv: object
    fv: object
    iw: object  # first w plane
    fw: object
    conj: object  # (nvis,) bool: the row was mirrored (w < 0)
    shift_phase: object  # (nvis,) complex64 exp(+2 pi i w s) (after mirroring)


def _split(x, support: int, xp: ModuleType):
    i0 = xp.ceil(x - support / 2)
    return i0.astype(xp.int32), (i0 - x).astype(xp.float32)


def w_range(*, uvw_m, freq_hz) -> tuple[float, float]:
    """min and max |w| in wavelengths over rows and channels (host floats)."""
    aw = np.abs(np.asarray(uvw_m[:, 2], np.float64))
    f = np.asarray(freq_hz, np.float64)
    return float(aw.min() * f.min() / C_M_S), float(aw.max() * f.max() / C_M_S)


def prepare_visibilities(*, plan: GridPlan, uvw_m, freq_hz, select=None, xp: ModuleType = np,
                         block: int = 1 << 24) -> Prepared:
    """Kernel positions of the visibilities (rows x channels) where ``select`` (nrow, nchan) bool
    is true (all when None). uvw_m (nrow, 3) float64 metres, freq_hz (nchan,). Worked out
    ``block`` visibilities at a time, so the float64 temporaries stay near 1 GB for a
    real-size group (84 M visibilities) instead of ~6 GB on the device.

    Baselines longer than the pixel size resolves (|u| cell > 1/2) wrap around the grid, as in
    ducc0: on the pixel grid exp(2 pi i u l) is periodic in u with period 1 / cell, so the
    image is still the DFT at the pixels (the PSF is then undersampled: the user's choice)."""
    uvw = xp.asarray(uvw_m, dtype=xp.float64)
    k = xp.asarray(freq_hz, dtype=xp.float64) / C_M_S
    nrow, nchan = uvw.shape[0], k.size
    itype = xp.int32 if nrow * nchan < 2**31 else xp.int64
    if select is None:
        index = xp.arange(nrow * nchan, dtype=itype)
    else:
        index = xp.flatnonzero(xp.asarray(select).ravel()).astype(itype)
    n = index.size
    out = Prepared(index=index, iu=xp.empty(n, xp.int32), fu=xp.empty(n, xp.float32), iv=xp.empty(n, xp.int32),
                   fv=xp.empty(n, xp.float32), iw=xp.empty(n, xp.int32), fw=xp.empty(n, xp.float32),
                   conj=xp.empty(n, bool), shift_phase=xp.empty(n, xp.complex64))
    g = plan.ngrid * plan.cell_rad
    sign_row = xp.where(uvw[:, 2] < 0, -1.0, 1.0)
    iw_min, iw_max = 0, 0
    for a in range(0, n, block):
        b = min(a + block, n)
        row, chan = index[a:b] // nchan, index[a:b] % nchan
        sign = sign_row[row]
        scale = sign * k[chan]
        u = uvw[row, 0] * scale * g
        v = -uvw[row, 1] * scale * g  # m = +(y - n/2) cell: the v axis runs the other way
        w = uvw[row, 2] * scale
        out.iu[a:b], out.fu[a:b] = _split(u, plan.support, xp)
        out.iv[a:b], out.fv[a:b] = _split(v, plan.support, xp)
        out.iw[a:b], out.fw[a:b] = _split((w - plan.w0) / plan.dw, plan.support, xp)
        out.conj[a:b] = sign < 0
        out.shift_phase[a:b] = xp.exp(2j * np.pi * w * plan.nm1_shift)
        iw_min = min(iw_min, int(xp.min(out.iw[a:b])))
        iw_max = max(iw_max, int(xp.max(out.iw[a:b])))
    if n and (iw_min < 0 or iw_max + plan.support > plan.nplanes):
        raise ValueError("gridder: w outside the planned range (plan_grid with this data's w_range)")
    return out

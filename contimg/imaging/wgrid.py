"""contimg's own w-stacking gridder: the algorithm the CUDA kernels run, with its CPU twin.

ducc0's ``vis2dirty``/``dirty2vis`` stay the production CPU gridder (`contimg.imaging.grid`);
this module is the same mathematics (improved w-stacking, Arras et al. 2021, A&A 646, A58)
written so that one plane at a time can be gridded by a CUDA kernel (`kernels/wgrid.cu`,
driven by `contimg.imaging.wgrid_gpu`) or by its numba twin (`_grid_plane` / `_degrid_plane`
here). Everything else — the plan, the preparation of each visibility's kernel position, the
FFTs, the w-screens and the gridding correction — is array code against ``xp`` and is the same
on both. Tests hold the CPU twin to ducc0 and to a direct DFT at ``epsilon`` and to the adjoint
identity; on a device the kernels are held to the twin.

Conventions are those of `contimg.imaging.grid` (FITS order, ``l = -(x - n/2) cell``,
``m = (y - n/2) cell``, ``V = sum I exp(+2 pi i (u l + v m + w (n - 1)))``); results are not
divided by the sum of weights (as ducc0's).

The kernel is the "exponential of semicircle" ``phi(z) = exp(beta (sqrt(1 - z^2) - 1))``,
``|z| <= 1`` over ``W`` grid cells, on a grid oversampled by 2 (Barnett, Magland & af Klinteberg
2019). The w direction is gridded with the same kernel onto planes ``dw`` apart, after the
``n - 1`` range is centred on zero (a phase ``exp(2 pi i w s)`` per visibility) and, since the
image is real, the rows with ``w < 0`` are mirrored (``uvw -> -uvw``, ``V -> conj V``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType

import numba
import numpy as np
from scipy.fft import next_fast_len

from contimg.geometry import C_M_S

__all__ = ["GridPlan", "plan_grid", "kernel_support", "es_kernel_ft", "prepare_visibilities", "Prepared",
           "vis2dirty", "dirty2vis", "WGridder", "w_range"]

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


@functools.lru_cache(maxsize=4)
def _corrections(plan: GridPlan, xp: ModuleType):
    """(nm1 + s) per pixel (npix, npix) and the gridding correction
    1 / (Phi(a/G) Phi(b/G) Phi_w(dw (n-1+s))), float64 of ``xp`` (kept for the plan's reuse)."""
    n, g, wsup, beta = plan.npix, plan.ngrid, plan.support, plan.beta
    a = (xp.arange(n, dtype=xp.float64) - n / 2) / g
    phi_uv = es_kernel_ft(a, support=wsup, beta=beta, xp=xp)
    nm1s = _nm1_image(n, plan.cell_rad, xp) + plan.nm1_shift
    phi_w = es_kernel_ft(plan.dw * nm1s, support=wsup, beta=beta, xp=xp)
    corr = 1.0 / (phi_uv[:, None] * phi_uv[None, :] * phi_w)
    return nm1s, corr


def _crop_index(plan: GridPlan, xp: ModuleType):
    """Grid index (mod ngrid) of image offsets a = -n/2 … n/2-1."""
    n = plan.npix
    return xp.asarray((np.arange(n) - n // 2) % plan.ngrid)


def _plane_grid_cpu(plan, prep, vals, j, grid):
    _grid_plane(grid, prep.iu, prep.fu, prep.iv, prep.fv, prep.iw, prep.fw, vals, j, plan.support, plan.beta)


def _plane_degrid_cpu(plan, prep, grid, j, out):
    _degrid_plane(grid, prep.iu, prep.fu, prep.iv, prep.fv, prep.iw, prep.fw, out, j, plan.support, plan.beta)


def _backend_ops(xp: ModuleType, plan: GridPlan, prep: Prepared):
    """(prep in the order the plane functions want, plane_grid, plane_degrid, complex dtype) for
    numpy (the numba twin, any order, complex128) or cupy (the CUDA kernels: sorted into tiles,
    complex64)."""
    if xp is np:
        return prep, _plane_grid_cpu, _plane_degrid_cpu, np.complex128
    from contimg.imaging import wgrid_gpu

    if not isinstance(prep, wgrid_gpu.Tiled):
        prep = wgrid_gpu.arrange(plan, prep, xp=xp)
    return prep, wgrid_gpu.plane_grid, wgrid_gpu.plane_degrid, xp.complex64


def vis2dirty(*, uvw_m, freq_hz, vis, wgt, npix: int, cell_rad: float, epsilon: float,
              xp: ModuleType = np, plan: GridPlan | None = None, prep: Prepared | None = None):
    """Dirty image (npix, npix) float64 (xp), FITS order: ``sum wgt V exp(-2 pi i (u l + v m + w (n-1)))``,
    not divided by the sum of weights. uvw_m (nrow, 3) metres, freq_hz (nchan,), vis
    (nrow, nchan) complex, wgt (nrow, nchan) float (0 = left out)."""
    wgt = xp.asarray(wgt)
    if plan is None:
        lo, hi = w_range(uvw_m=uvw_m, freq_hz=freq_hz)
        plan = plan_grid(npix=npix, cell_rad=cell_rad, epsilon=epsilon, w_min=lo, w_max=hi)
    if prep is None:
        prep = prepare_visibilities(plan=plan, uvw_m=uvw_m, freq_hz=freq_hz, select=wgt > 0, xp=xp)
    prep, plane_grid, _, ctype = _backend_ops(xp, plan, prep)
    vals = xp.asarray(vis).ravel()[prep.index] * wgt.ravel()[prep.index]
    vals = xp.where(prep.conj, xp.conj(vals), vals) * prep.shift_phase
    vals = vals.astype(ctype)
    nm1s, corr = _corrections(plan, xp)
    crop = _crop_index(plan, xp)
    g = plan.ngrid
    image = xp.zeros((npix, npix), xp.complex128)
    grid = xp.zeros((g, g), ctype)
    for j in range(plan.nplanes):
        grid[...] = 0
        plane_grid(plan, prep, vals, j, grid)
        plane = xp.fft.ifft2(grid)[crop[:, None], crop[None, :]] * (g * g)
        image += plane * xp.exp(-2j * np.pi * (plan.w0 + j * plan.dw) * nm1s)
    return xp.real(image) * corr


def dirty2vis(*, uvw_m, freq_hz, image, cell_rad: float, epsilon: float, xp: ModuleType = np,
              plan: GridPlan | None = None, prep: Prepared | None = None):
    """Visibilities (nrow, nchan) of a sky image (npix, npix) FITS order, Jy/pixel:
    ``sum I exp(+2 pi i (u l + v m + w (n-1)))`` — the adjoint of `vis2dirty`. complex128 on
    numpy, complex64 on the device (memory: a real-size group is 84 M visibilities)."""
    image = xp.asarray(image, dtype=xp.float64)
    npix = image.shape[0]
    nrow, nchan = uvw_m.shape[0], len(freq_hz)
    if plan is None:
        lo, hi = w_range(uvw_m=uvw_m, freq_hz=freq_hz)
        plan = plan_grid(npix=npix, cell_rad=cell_rad, epsilon=epsilon, w_min=lo, w_max=hi)
    if prep is None:
        prep = prepare_visibilities(plan=plan, uvw_m=uvw_m, freq_hz=freq_hz, xp=xp)
    prep, _, plane_degrid, ctype = _backend_ops(xp, plan, prep)
    nm1s, corr = _corrections(plan, xp)
    crop = _crop_index(plan, xp)
    g = plan.ngrid
    src = image * corr
    acc = xp.zeros(prep.index.size, ctype)
    padded = xp.zeros((g, g), ctype)  # complex64 on the device: half the memory and FFT time
    for j in range(plan.nplanes):
        padded[crop[:, None], crop[None, :]] = src * xp.exp(2j * np.pi * (plan.w0 + j * plan.dw) * nm1s)
        grid = xp.fft.fft2(padded).astype(ctype)
        plane_degrid(plan, prep, grid, j, acc)
    vals = acc * xp.conj(prep.shift_phase)
    vals = xp.where(prep.conj, xp.conj(vals), vals)
    out = xp.zeros(nrow * nchan, ctype)
    out[prep.index] = vals
    return out.reshape(nrow, nchan)


@numba.njit(cache=True, nogil=True, inline="always")
def _weights(f, support, beta, out):
    half = support / 2
    for i in range(support):
        z = (f + i) / half
        z2 = z * z
        out[i] = np.exp(beta * (np.sqrt(1 - z2) - 1)) if z2 < 1 else 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _vis_weights(n, fu, fv, fw, support, beta, ku, kv, kw):
    """Visibility ``n``'s kernel weights along u, v and w into ku, kv, kw (support,)."""
    _weights(fu[n], support, beta, ku)
    _weights(fv[n], support, beta, kv)
    _weights(fw[n], support, beta, kw)


@numba.njit(cache=True, nogil=True)
def _grid_plane(grid, iu, fu, iv, fv, iw, fw, vals, j, support, beta):
    """Add every visibility whose w support covers plane ``j`` to ``grid`` (ngrid, ngrid),
    [v, u] order, kernel weights phi_u phi_v phi_w (the CUDA kernel ``grid_plane``'s twin)."""
    g = grid.shape[0]
    ku = np.empty(support)
    kv = np.empty(support)
    kw = np.empty(support)
    for n in range(vals.size):
        dj = j - iw[n]
        if dj < 0 or dj >= support:
            continue
        _vis_weights(n, fu, fv, fw, support, beta, ku, kv, kw)
        val = vals[n] * kw[dj]
        for a in range(support):
            row = (iv[n] + a) % g
            va = val * kv[a]
            for b in range(support):
                grid[row, (iu[n] + b) % g] += va * ku[b]


@numba.njit(cache=True, nogil=True)
def _degrid_plane(grid, iu, fu, iv, fv, iw, fw, out, j, support, beta):
    """``out[n] += phi_w sum phi_u phi_v grid`` for the visibilities whose w support covers
    plane ``j`` (the CUDA kernel ``degrid_plane``'s twin)."""
    g = grid.shape[0]
    ku = np.empty(support)
    kv = np.empty(support)
    kw = np.empty(support)
    for n in range(out.size):
        dj = j - iw[n]
        if dj < 0 or dj >= support:
            continue
        _vis_weights(n, fu, fv, fw, support, beta, ku, kv, kw)
        acc = 0j
        for a in range(support):
            row = (iv[n] + a) % g
            s = 0j
            for b in range(support):
                s += grid[row, (iu[n] + b) % g] * ku[b]
            acc += s * kv[a]
        out[n] += acc * kw[dj]


class WGridder:
    """`contimg.imaging.grid.Ducc0Gridder`'s twin on this gridder: the dirty image, the PSF and
    residual images of one visibility set, (npix, npix) float32 FITS order in Jy/beam, arrays of
    ``xp``. With cupy it is the device imager (the CUDA kernels); with numpy it runs the numba
    twin (slow: tests, small images). The kernel positions are prepared once per image size."""

    def __init__(self, *, uvw_m, freq_hz, vis, wgt, npix: int, cell_rad: float, epsilon: float,
                 xp: ModuleType = np):
        self.xp = xp
        self.npix, self.cell_rad, self.epsilon = npix, cell_rad, epsilon
        self.uvw_m = np.asarray(uvw_m, np.float64)
        self.freq_hz = np.asarray(freq_hz, np.float64)
        self.wgt = xp.asarray(wgt, dtype=xp.float32)
        self.vis = xp.asarray(vis, dtype=xp.complex64)
        self.wsum = float(xp.sum(self.wgt, dtype=xp.float64))
        if self.wsum <= 0:
            raise ValueError("WGridder: every visibility has zero weight")
        self._w = w_range(uvw_m=self.uvw_m, freq_hz=self.freq_hz)
        self._plan, self._prep = self._prepare(npix)

    def _prepare(self, npix: int) -> tuple[GridPlan, Prepared]:
        plan = plan_grid(npix=npix, cell_rad=self.cell_rad, epsilon=self.epsilon, w_min=self._w[0], w_max=self._w[1])
        prep = prepare_visibilities(plan=plan, uvw_m=self.uvw_m, freq_hz=self.freq_hz, select=self.wgt > 0,
                                    xp=self.xp)
        prep = _backend_ops(self.xp, plan, prep)[0]
        return plan, prep

    def _image(self, vis, plan: GridPlan, prep: Prepared):
        img = vis2dirty(uvw_m=self.uvw_m, freq_hz=self.freq_hz, vis=vis, wgt=self.wgt, npix=plan.npix,
                        cell_rad=self.cell_rad, epsilon=self.epsilon, xp=self.xp, plan=plan, prep=prep)
        return (img / self.wsum).astype(self.xp.float32)

    def dirty_image(self):
        return self._image(self.vis, self._plan, self._prep)

    def psf_image(self):
        """(2 npix, 2 npix), peak 1 in the centre (its own plan, dropped afterwards)."""
        plan, prep = self._prepare(2 * self.npix)
        return self._image(self.xp.ones_like(self.vis), plan, prep)

    def residual_image(self, model):
        model_vis = dirty2vis(uvw_m=self.uvw_m, freq_hz=self.freq_hz, image=model, cell_rad=self.cell_rad,
                              epsilon=self.epsilon, xp=self.xp, plan=self._plan, prep=self._prep)
        return self._image(self.vis - model_vis.astype(self.xp.complex64), self._plan, self._prep)

"""contimg's own w-stacking gridder: the algorithm the CUDA kernels run, with its CPU twin.

ducc0's ``vis2dirty``/``dirty2vis`` stay the production CPU gridder (`contimg.imaging.grid`);
this module is the same mathematics (improved w-stacking, Arras et al. 2021, A&A 646, A58)
written so that one plane at a time can be gridded by a CUDA kernel (`kernels/wgrid.py`,
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
from types import ModuleType

import numba
import numpy as np

from contimg.imaging import wgrid_gpu
from contimg.imaging.wgrid_plan import (GridPlan, Prepared, _nm1_image, es_kernel_ft, kernel_support, plan_grid,
                                        prepare_visibilities, w_range)

__all__ = ["GridPlan", "plan_grid", "kernel_support", "es_kernel_ft", "prepare_visibilities", "Prepared",
           "vis2dirty", "dirty2vis", "WGridder", "w_range"]


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
                 xp: ModuleType = np, psf_w_term: bool = True):
        self.xp = xp
        self.psf_w_term = psf_w_term
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

    def _prepare(self, npix: int, *, w_term: bool = True) -> tuple[GridPlan, Prepared]:
        w_min, w_max = self._w if w_term else (0.0, 0.0)
        uvw = self.uvw_m
        if not w_term:
            uvw = uvw.copy()
            uvw[:, 2] = 0.0
        plan = plan_grid(npix=npix, cell_rad=self.cell_rad, epsilon=self.epsilon, w_min=w_min, w_max=w_max)
        prep = prepare_visibilities(plan=plan, uvw_m=uvw, freq_hz=self.freq_hz, select=self.wgt > 0, xp=self.xp)
        prep = _backend_ops(self.xp, plan, prep)[0]
        return plan, prep

    def _image(self, vis, plan: GridPlan, prep: Prepared):
        img = vis2dirty(uvw_m=self.uvw_m, freq_hz=self.freq_hz, vis=vis, wgt=self.wgt, npix=plan.npix,
                        cell_rad=self.cell_rad, epsilon=self.epsilon, xp=self.xp, plan=plan, prep=prep)
        return (img / self.wsum).astype(self.xp.float32)

    def dirty_image(self):
        return self._image(self.vis, self._plan, self._prep)

    def psf_image(self):
        """(npix, npix), peak 1 at (npix/2, npix/2): the image's own plan, or without the w-term
        (``psf_w_term`` False, as `contimg.imaging.grid.psf_image`'s ``w_term``: w taken as 0,
        one plan's planes; its kernel positions are made here and dropped after)."""
        plan, prep = (self._plan, self._prep) if self.psf_w_term else self._prepare(self.npix, w_term=False)
        return self._image(self.xp.ones_like(self.vis), plan, prep)

    def residual_image(self, model):
        model_vis = dirty2vis(uvw_m=self.uvw_m, freq_hz=self.freq_hz, image=model, cell_rad=self.cell_rad,
                              epsilon=self.epsilon, xp=self.xp, plan=self._plan, prep=self._prep)
        return self._image(self.vis - model_vis.astype(self.xp.complex64), self._plan, self._prep)

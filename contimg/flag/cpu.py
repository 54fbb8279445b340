"""The flagger's CPU twin: numba, one (baseline, polarization) time-frequency plane per thread.

Same arithmetic, same order as the array code in `contimg.flag.xp` (see there for the
algorithms), reading the visibilities in place: no (nslab, ntime, nchan) copies, each plane's
work stays in the cache.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["detect", "sir_dilate"]


@numba.njit(cache=True, nogil=True)
def _box(x, lo, hi, axis):
    """Box sums of a (T, C) float64 plane along axis 0 (time) or 1 (frequency)."""
    nt, nc = x.shape
    out = np.empty_like(x)
    if axis == 0:
        p = np.empty(nt + 1)
        for c in range(nc):
            p[0] = 0.0
            for t in range(nt):
                p[t + 1] = p[t] + x[t, c]
            for t in range(nt):
                out[t, c] = p[hi[t] + 1] - p[lo[t]]
    else:
        p = np.empty(nc + 1)
        for t in range(nt):
            p[0] = 0.0
            for c in range(nc):
                p[c + 1] = p[c] + x[t, c]
            for c in range(nc):
                out[t, c] = p[hi[c] + 1] - p[lo[c]]
    return out


@numba.njit(cache=True, nogil=True)
def _sumthreshold_line(z, mask, chis, out):
    """SumThreshold along one line: z (n,) float64, mask (n,) bool in; out (n,) bool grown."""
    n = z.size
    for i in range(n):
        out[i] = mask[i]
    pv = np.empty(n + 1)
    pc = np.empty(n + 1)
    h = np.empty(n + 1, np.int64)
    for k in range(chis.size):
        m = 1 << k
        chi = chis[k]
        pv[0] = 0.0
        pc[0] = 0.0
        for i in range(n):
            if out[i]:
                pv[i + 1] = pv[i] + 0.0
                pc[i + 1] = pc[i] + 0.0
            else:
                pv[i + 1] = pv[i] + z[i]
                pc[i + 1] = pc[i] + 1.0
        h[0] = 0
        for s in range(n - m + 1):
            sm = pv[s + m] - pv[s]
            cnt = pc[s + m] - pc[s]
            h[s + 1] = h[s] + (1 if (cnt > 0 and abs(sm) > chi * cnt) else 0)
        for i in range(n):
            lo = min(max(i - m + 1, 0), n - m)
            hi = min(max(i, 0), n - m)
            if h[hi + 1] - h[lo] > 0:
                out[i] = True


@numba.njit(parallel=True, cache=True, nogil=True)
def _detect_kernel(vis, base, cross_idx, lo_t, hi_t, lo_f, hi_f, chis_t, chis_f, passes, det, zout):
    ntime, _, nchan, npol = vis.shape
    nx = cross_idx.size
    n_iter = chis_t.shape[0]
    for sp in numba.prange(nx * npol):
        j = sp // npol
        p = sp % npol
        b = cross_idx[j]
        amp = np.empty((ntime, nchan))
        valid = np.empty((ntime, nchan), np.bool_)
        for t in range(ntime):
            for c in range(nchan):
                v = vis[t, b, c, p]
                re = np.float64(v.real)
                im = np.float64(v.imag)
                amp[t, c] = np.sqrt(re * re + im * im)
                valid[t, c] = not base[t, b, c, p]
        mask = ~valid
        z = np.zeros((ntime, nchan))
        buf = np.empty(ntime * nchan)
        line_t = np.empty(ntime, np.bool_)
        line_f = np.empty(nchan, np.bool_)
        for it in range(n_iter):
            num = np.empty((ntime, nchan))
            den = np.empty((ntime, nchan))
            for t in range(ntime):
                for c in range(nchan):
                    num[t, c] = 0.0 if mask[t, c] else amp[t, c]
                    den[t, c] = 0.0 if mask[t, c] else 1.0
            for _ in range(passes):
                num = _box(num, lo_t, hi_t, 0)
                den = _box(den, lo_t, hi_t, 0)
            for _ in range(passes):
                num = _box(num, lo_f, hi_f, 1)
                den = _box(den, lo_f, hi_f, 1)
            n = 0
            resid = np.empty((ntime, nchan))
            for t in range(ntime):
                for c in range(nchan):
                    bg = num[t, c] / den[t, c] if den[t, c] > 0 else 0.0
                    resid[t, c] = amp[t, c] - bg
                    if not mask[t, c]:
                        buf[n] = resid[t, c]
                        n += 1
            sigma = 0.0
            if n >= 3:
                med = np.median(buf[:n])
                for i in range(n):
                    buf[i] = abs(buf[i] - med)
                sigma = 1.4826 * np.median(buf[:n])
            for t in range(ntime):
                for c in range(nchan):
                    z[t, c] = resid[t, c] / sigma if (sigma > 0 and valid[t, c]) else 0.0
            mt = np.empty((ntime, nchan), np.bool_)
            for c in range(nchan):
                _sumthreshold_line(z[:, c].copy(), mask[:, c].copy(), chis_t[it], line_t)
                for t in range(ntime):
                    mt[t, c] = line_t[t]
            for t in range(ntime):
                _sumthreshold_line(z[t, :].copy(), mask[t, :].copy(), chis_f[it], line_f)
                for c in range(nchan):
                    mask[t, c] = mt[t, c] or line_f[c]
        for t in range(ntime):
            for c in range(nchan):
                det[t, j, c, p] = mask[t, c] and valid[t, c]
                zout[t, j, c, p] = np.float32(z[t, c])


def detect(*, vis: np.ndarray, base: np.ndarray, cross_idx: np.ndarray, lo_t, hi_t, lo_f, hi_f,
           chis_t: np.ndarray, chis_f: np.ndarray, n_iter: int, factor_step: float,
           passes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Background removal + SumThreshold on every cross-correlation plane.

    vis: (ntime, nbl, nchan, npol) complex64; base: same shape bool (already bad);
    cross_idx: (nx,) baseline indices to search. Returns (detected (ntime, nx, nchan, npol) bool,
    new flags only; z (ntime, nx, nchan, npol) float32 residual in robust sigmas).
    """
    ntime, _, nchan, npol = vis.shape
    nx = cross_idx.size
    det = np.empty((ntime, nx, nchan, npol), bool)
    zout = np.empty((ntime, nx, nchan, npol), np.float32)
    factors = [factor_step ** (n_iter - 1 - it) for it in range(n_iter)]
    ct = np.stack([chis_t * f for f in factors])
    cf = np.stack([chis_f * f for f in factors])
    _detect_kernel(vis, base, np.asarray(cross_idx, np.int64), np.asarray(lo_t, np.int64), np.asarray(hi_t, np.int64),
                   np.asarray(lo_f, np.int64), np.asarray(hi_f, np.int64), ct, cf, int(passes), det, zout)
    return det, zout


@numba.njit(cache=True, nogil=True)
def _sir_line(line, eta, out):
    n = line.size
    w = np.empty(n + 1)
    w[0] = 0.0
    for i in range(n):
        w[i + 1] = w[i] + (eta if line[i] else eta - 1.0)
    pmin = np.empty(n)
    cur = w[0]
    for y in range(n):
        cur = min(cur, w[y])
        pmin[y] = cur
    cur = w[n]
    for y in range(n - 1, -1, -1):
        cur = max(cur, w[y + 1])
        out[y] = out[y] or cur >= pmin[y]


@numba.njit(parallel=True, cache=True, nogil=True)
def _sir_kernel(mask, eta_t, eta_f, out):
    ntime, nx, nchan, npol = mask.shape
    for sp in numba.prange(nx * npol):
        j = sp // npol
        p = sp % npol
        res = np.zeros((ntime, nchan), np.bool_)
        lt = np.empty(ntime, np.bool_)
        lf = np.empty(nchan, np.bool_)
        for c in range(nchan):
            for t in range(ntime):
                lt[t] = mask[t, j, c, p]
            col = np.zeros(ntime, np.bool_)
            _sir_line(lt, eta_t, col)
            for t in range(ntime):
                res[t, c] = col[t]
        for t in range(ntime):
            for c in range(nchan):
                lf[c] = mask[t, j, c, p]
            row = np.zeros(nchan, np.bool_)
            _sir_line(lf, eta_f, row)
            for c in range(nchan):
                out[t, j, c, p] = res[t, c] or row[c]


def sir_dilate(*, mask: np.ndarray, eta_time: float, eta_freq: float) -> np.ndarray:
    """Scale-invariant rank dilation of ``mask`` (ntime, nx, nchan, npol) bool along time and
    along frequency (OR of the two)."""
    out = np.empty_like(mask)
    _sir_kernel(mask, float(eta_time), float(eta_freq), out)
    return out

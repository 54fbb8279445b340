"""The flagger's array code, written against ``xp`` (numpy or cupy): the device path.

Everything works on a stack of time-frequency planes, ``(nslab, ntime, nchan)``, one slab per
(baseline, polarization), all slabs at once. The numba twin in `contimg.flag.cpu` runs the same
arithmetic one slab per thread, in the same order (float64 prefix sums, the same medians), so on
the host the two give bit-identical flags; on a GPU the parallel prefix sums round differently
and the flags agree to a stated tolerance (tests/test_flag.py).

The building blocks:

- `box_sum`: windowed sums from float64 prefix sums, window ``[lo[i], hi[i]]`` (inclusive) per
  index, so a window can stop at a subband edge.
- `masked_background`: three box passes along time, then three along frequency (a Gaussian to a
  few per cent), of the unflagged values and of the unflagged count; background = ratio.
- `robust_sigma`: 1.4826 × the median absolute deviation of the unflagged residuals.
- `sumthreshold`: AOFlagger's SumThreshold (Offringa et al. 2010) along one axis: for window
  lengths M = 1, 2, 4, …, a window whose mean over its unflagged samples exceeds chi_M in
  absolute value is flagged whole; chi_M = chi_1 / rho^log2(M); each length sees the flags of
  the shorter ones.
- `sir_dilate`: the scale-invariant rank operator (Offringa, van de Gronde & Roerdink 2012) along
  one axis: a sample is flagged when some interval containing it is flagged for at least
  ``1 - eta`` of its length; linear time from prefix sums, a prefix minimum and a suffix maximum.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_sum", "masked_background", "robust_sigma", "sumthreshold", "sir_dilate", "detect_slabs",
           "window_thresholds"]


def window_thresholds(*, chi1: float, rho: float, n: int, max_window: int) -> np.ndarray:
    """chi_M for M = 1, 2, 4, … ≤ min(n, max_window): (nwin,) float64 (host)."""
    lengths = []
    m = 1
    while m <= min(n, max_window):
        lengths.append(m)
        m *= 2
    return np.array([chi1 / rho ** np.log2(m) for m in lengths], dtype=np.float64)


def _cumsum0(xp, x, axis: int):
    shape = list(x.shape)
    shape[axis] = 1
    return xp.concatenate([xp.zeros(shape, x.dtype), xp.cumsum(x, axis=axis)], axis=axis)


def box_sum(*, xp, x, lo, hi, axis: int):
    """Sum of ``x`` over ``[lo[i], hi[i]]`` along ``axis`` for each index i. x float64; lo, hi
    (n,) int64 on the same device."""
    p = _cumsum0(xp, x, axis)
    return xp.take(p, hi + 1, axis=axis) - xp.take(p, lo, axis=axis)


def masked_background(*, xp, amp, valid, lo_t, hi_t, lo_f, hi_f, passes: int = 3):
    """Smooth background of ``amp`` (nslab, ntime, nchan) float64 over ``valid`` samples:
    ``passes`` box sums along time then along frequency of the valid values and of the valid
    count; 0 where no valid sample is near."""
    num = xp.where(valid, amp, 0.0)
    den = valid.astype(xp.float64)
    for _ in range(passes):
        num = box_sum(xp=xp, x=num, lo=lo_t, hi=hi_t, axis=1)
        den = box_sum(xp=xp, x=den, lo=lo_t, hi=hi_t, axis=1)
    for _ in range(passes):
        num = box_sum(xp=xp, x=num, lo=lo_f, hi=hi_f, axis=2)
        den = box_sum(xp=xp, x=den, lo=lo_f, hi=hi_f, axis=2)
    return xp.where(den > 0, num / xp.where(den > 0, den, 1.0), 0.0)


def robust_sigma(*, xp, resid, valid):
    """(nslab,) 1.4826 × MAD of the valid residuals per slab; 0 where fewer than 3 are valid."""
    nslab = resid.shape[0]
    flat = resid.reshape(nslab, -1)
    ok = valid.reshape(nslab, -1)
    enough = ok.sum(axis=1) >= 3
    vals = xp.where(ok & enough[:, None], flat, xp.nan)
    vals = xp.where(enough[:, None], vals, 0.0)
    # by hand, not astropy.stats.mad_std: vals may be a CuPy array, which mad_std does not take
    med = xp.nanmedian(vals, axis=1)
    mad = xp.nanmedian(xp.abs(vals - med[:, None]), axis=1)
    return xp.where(enough, 1.4826 * mad, 0.0)


def sumthreshold(*, xp, z, mask, chis, axis: int):
    """SumThreshold along ``axis`` of ``z`` (nslab, ntime, nchan) float64, starting from
    ``mask`` (bool, same shape; flagged samples are left out of the sums). chis: (nwin,) host
    float64 for M = 1, 2, 4, …. Returns the grown mask. For M = 1 the window is the sample
    itself: |z| > chi_1 directly (the difference of two prefix sums would round it)."""
    out = mask.copy()
    n = z.shape[axis]
    for k, chi in enumerate(chis):
        m = 1 << k
        if m == 1:  # a window of one sample is the sample: |z| itself, no sums (as the numba twin)
            out |= xp.abs(z) > float(chi)
            continue
        v = xp.where(out, 0.0, z)
        c = (~out).astype(xp.float64)
        pv = _cumsum0(xp, v, axis)
        pc = _cumsum0(xp, c, axis)
        starts = xp.arange(n - m + 1)
        s = xp.take(pv, starts + m, axis=axis) - xp.take(pv, starts, axis=axis)
        cnt = xp.take(pc, starts + m, axis=axis) - xp.take(pc, starts, axis=axis)
        hit = (cnt > 0) & (xp.abs(s) > float(chi) * cnt)
        h = _cumsum0(xp, hit.astype(xp.int32), axis)
        i = xp.arange(n)
        lo = xp.clip(i - m + 1, 0, n - m)
        hi = xp.clip(i, 0, n - m)
        covered = (xp.take(h, hi + 1, axis=axis) - xp.take(h, lo, axis=axis)) > 0
        out |= covered
    return out


def _scan(xp, x, axis: int, op):
    """Inclusive prefix ``op`` (minimum or maximum) along ``axis`` by doubling steps (exact:
    min/max do not round, so the result equals a sequential scan)."""
    y = x.copy()
    n = x.shape[axis]
    k = 1
    while k < n:
        head = [slice(None)] * x.ndim
        tail = [slice(None)] * x.ndim
        head[axis] = slice(k, None)
        tail[axis] = slice(None, n - k)
        shifted = y[tuple(tail)]
        y = y.copy()
        y[tuple(head)] = op(y[tuple(head)], shifted)
        k *= 2
    return y


def sir_dilate(*, xp, mask, eta: float, axis: int):
    """Scale-invariant rank dilation of ``mask`` (nslab, ntime, nchan) bool along ``axis``."""
    n = mask.shape[axis]
    g = xp.where(mask, eta, eta - 1.0)
    w = _cumsum0(xp, g, axis)  # W[0..n]
    idx = xp.arange(n)
    prefix_min = _scan(xp, xp.take(w, idx, axis=axis), axis, xp.minimum)  # min W[0..y]
    rev = xp.flip(xp.take(w, idx + 1, axis=axis), axis=axis)  # W[n], …, W[1]
    suffix_max = xp.flip(_scan(xp, rev, axis, xp.maximum), axis=axis)  # max W[y+1..n]
    return suffix_max >= prefix_min


def detect_slabs(*, xp, amp, valid, lo_t, hi_t, lo_f, hi_f, chis_t, chis_f, n_iter: int,
                 factor_step: float, passes: int = 3):
    """Iterated background removal + SumThreshold on each slab.

    amp: (nslab, ntime, nchan) float64 amplitudes; valid: same shape bool (False = already bad).
    chis_t, chis_f: (nwin,) host float64 base thresholds along time and frequency, in robust
    sigmas; iteration i of n_iter uses them × factor_step^(n_iter - 1 - i).
    Returns (detected (nslab, ntime, nchan) bool — new flags only, z (same shape) float32 — the
    last iteration's residual in robust sigmas for every valid sample, detected ones included;
    0 where not valid or undetermined).
    """
    mask = ~valid
    z = xp.zeros(amp.shape, xp.float64)
    for it in range(n_iter):
        f = factor_step ** (n_iter - 1 - it)
        good = ~mask
        bg = masked_background(xp=xp, amp=amp, valid=good, lo_t=lo_t, hi_t=hi_t, lo_f=lo_f, hi_f=hi_f,
                               passes=passes)
        resid = amp - bg
        sigma = robust_sigma(xp=xp, resid=resid, valid=good)
        live = (sigma > 0)[:, None, None]
        z = xp.where(valid & live, resid / xp.where(live, sigma[:, None, None], 1.0), 0.0)
        mt = sumthreshold(xp=xp, z=z, mask=mask, chis=chis_t * f, axis=1)
        mf = sumthreshold(xp=xp, z=z, mask=mask, chis=chis_f * f, axis=2)
        mask = mt | mf
    return mask & valid, z.astype(xp.float32)

"""The flagger's CPU twin: numba, one (baseline, polarization) time-frequency plane per thread.

Same arithmetic, same order as the array code in `contimg.flag.xp` (see there for the
algorithms), reading the visibilities in place: no (nslab, ntime, nchan) copies, each plane's
work stays in the cache.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["initial_flags", "detect", "combine_and_dilate", "baseline_mean", "count_axes", "or_broadcast",
           "cross_counts"]


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _initial_kernel(vis, flags, keep, cross, base, n_input, n_invalid):
    ntime, nbl, nchan, npol = vis.shape
    for b in numba.prange(nbl):
        ni = 0
        nv = 0
        for t in range(ntime):
            for c in range(nchan):
                for p in range(npol):
                    f = keep and flags[t, b, c, p]
                    v = vis[t, b, c, p]
                    bad = (v.real == 0 and v.imag == 0) or not (np.isfinite(v.real) and np.isfinite(v.imag))
                    ni += f
                    nv += bad and not f
                    base[t, b, c, p] = f or bad
        if cross[b]:
            n_input[b] = ni
            n_invalid[b] = nv


def initial_flags(*, vis: np.ndarray, flags: np.ndarray, keep: bool, cross: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The files' flags (``keep``) or none, OR zeros and non-finite values, in one pass.

    vis: (ntime, nbl, nchan, npol) complex64; flags: same shape bool; cross: (nbl,) bool.
    Returns (flags (same shape bool), input flags on cross-correlations, invalid samples
    added on cross-correlations)."""
    nbl = vis.shape[1]
    base = np.empty(vis.shape, bool)
    n_input = np.zeros(nbl, np.int64)
    n_invalid = np.zeros(nbl, np.int64)
    _initial_kernel(vis, flags, bool(keep), np.asarray(cross, bool), base, n_input, n_invalid)
    return base, int(n_input.sum()), int(n_invalid.sum())


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _box_time(num, den, lo, hi, p, q, out_num, out_den):
    """Box sums along time (axis 0) of two (T, C) float64 planes at once, rows vectorised over
    channels: ``p``, ``q`` (T + 1, C) scratch prefix sums."""
    nt, nc = num.shape
    for c in range(nc):
        p[0, c] = 0.0
        q[0, c] = 0.0
    for t in range(nt):
        for c in range(nc):
            p[t + 1, c] = p[t, c] + num[t, c]
            q[t + 1, c] = q[t, c] + den[t, c]
    for t in range(nt):
        a = hi[t] + 1
        b = lo[t]
        for c in range(nc):
            out_num[t, c] = p[a, c] - p[b, c]
            out_den[t, c] = q[a, c] - q[b, c]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _box_freq(num, den, lo, hi, p, q, out_num, out_den):
    """Box sums along frequency (axis 1) of two (T, C) float64 planes: ``p``, ``q`` (C + 1,)
    scratch."""
    nt, nc = num.shape
    for t in range(nt):
        p[0] = 0.0
        q[0] = 0.0
        for c in range(nc):
            p[c + 1] = p[c] + num[t, c]
            q[c + 1] = q[c] + den[t, c]
        for c in range(nc):
            out_num[t, c] = p[hi[c] + 1] - p[lo[c]]
            out_den[t, c] = q[hi[c] + 1] - q[lo[c]]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _select(a, n, k):
    """Partially order ``a[:n]`` in place so that ``a[k]`` is its k-th smallest value and
    ``a[:k]`` holds values not above it (Hoare partition around a median of three); returns
    ``a[k]``. Exact: it only moves values."""
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) // 2
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bracket(a, n, k_lo, k_hi, nsamp, half, samp, out):
    """Gather into ``out`` the values of ``a[:n]`` between two order statistics of a strided
    sample of ``nsamp`` values that bracket the ranks ``k_lo``..``k_hi`` (``half`` sample ranks
    either side). Returns (below, m): the count of values under the bracket and of those
    gathered. The bracket holds the ranks iff below <= k_lo and k_hi < below + m. The gather
    has no data-dependent branch (fresh data defeat branch prediction)."""
    step = n // nsamp
    for i in range(nsamp):
        samp[i] = a[i * step]
    s = np.sort(samp[:nsamp])
    r_lo = (k_lo * nsamp) // n - half
    r_hi = (k_hi * nsamp) // n + half
    lo = s[r_lo] if r_lo >= 0 else -np.inf
    hi = s[r_hi] if r_hi < nsamp else np.inf
    below = 0
    m = 0
    for i in range(n):
        x = a[i]
        below += np.int64(x < lo)
        out[m] = x
        m += np.int64(x >= lo) & np.int64(x <= hi)
    return below, m


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _median_inplace(a, n, scratch, scratch2):
    """The median of ``a[:n]`` (n >= 1), exactly as numpy computes it (the mean of the two
    middle values for even n). May reorder ``a[:n]``; ``scratch``, ``scratch2`` (>= n,)
    float64.

    Floyd–Rivest style, two rounds: values between two sample order statistics that bracket
    the middle ranks are gathered (~15 % of them, then ~20 % of those), and the exact
    selection runs on what is left; a missed bracket (rare) selects among the previous round's
    values. Exact: values are only moved, never combined, until the final mean."""
    k = n // 2
    k_lo = k - 1 if n % 2 == 0 else k
    samp = np.empty(256)
    src = a
    cnt = n
    off = 0  # ranks in src are ranks in a less off
    for level in range(2):
        if cnt < 1024:
            break
        dst = scratch if level == 0 else scratch2
        nsamp = 256 if level == 0 else 128
        half = 20 if level == 0 else 12
        below, m = _bracket(src, cnt, k_lo - off, k - off, nsamp, half, samp, dst)
        if below <= k_lo - off and k - off < below + m:
            src = dst
            cnt = m
            off += below
        else:
            break
    kk = k - off
    upper = _select(src, cnt, kk)
    if n % 2:
        return upper
    lower = src[0]
    for i in range(1, kk):
        if src[i] > lower:
            lower = src[i]
    return (lower + upper) / 2.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sumthreshold_axis0(z, mask, chis, max_abs, pv, pc, out, until):
    """SumThreshold along axis 0 of an (N, W) plane, all W lines at once (rows vectorised).

    z float64, mask bool in; out bool (N, W) = mask grown; pv (N + 1, W) float64, pc
    (N + 1, W) int64 and until (W,) int64 scratch. ``max_abs``: max |z| over the samples not
    in ``mask`` — a window length whose threshold is above it cannot flag anything (a mean is
    never above the largest value) and is skipped (with a margin far above the prefix sums'
    rounding).
    Along frequency it runs on the transposed plane."""
    nt, nc = z.shape
    for t in range(nt):
        for c in range(nc):
            out[t, c] = mask[t, c]
    for k in range(chis.size):
        m = 1 << k
        chi = chis[k]
        if max_abs < chi * (1.0 - 1e-6):
            continue
        if m == 1:  # a window of one sample is the sample: |z| itself, no sums (as the array code)
            for t in range(nt):
                for c in range(nc):
                    out[t, c] = out[t, c] | (abs(z[t, c]) > chi)
            continue
        for c in range(nc):
            pv[0, c] = 0.0
            pc[0, c] = 0
        for t in range(nt):
            for c in range(nc):
                o = out[t, c]
                pv[t + 1, c] = pv[t, c] + (0.0 if o else z[t, c])
                pc[t + 1, c] = pc[t, c] + (0 if o else 1)
        # a window [s, s + m) over the threshold flags its samples: swept in s with, per line,
        # the end of the last such window (the prefix sums are taken: growing out now is safe);
        # no branch per sample, so the lines vectorise
        for c in range(nc):
            until[c] = 0
        for s in range(nt):
            if s + m <= nt:
                for c in range(nc):
                    cnt = pc[s + m, c] - pc[s, c]
                    hit = (cnt > 0) & (abs(pv[s + m, c] - pv[s, c]) > chi * cnt)
                    until[c] = s + m if hit else until[c]
                    out[s, c] = out[s, c] | (s < until[c])
            else:
                for c in range(nc):
                    out[s, c] = out[s, c] | (s < until[c])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _residual_sigmas(amp, valid, mask, lo_t, hi_t, lo_f, hi_f, passes, num, den, num2, den2, pt, qt, pf, qf, buf,
                     scratch, z, zf, mask_f):
    """One plane's residual from its masked smooth background, in robust sigmas: z (T, C) and
    its transpose zf (C, T), with mask_f = mask transposed. The rest are scratch buffers."""
    ntime, nchan = amp.shape
    for t in range(ntime):
        for c in range(nchan):
            num[t, c] = 0.0 if mask[t, c] else amp[t, c]
            den[t, c] = 0.0 if mask[t, c] else 1.0
    for _ in range(passes):
        _box_time(num, den, lo_t, hi_t, pt, qt, num2, den2)
        num, num2 = num2, num
        den, den2 = den2, den
    for _ in range(passes):
        _box_freq(num, den, lo_f, hi_f, pf, qf, num2, den2)
        num, num2 = num2, num
        den, den2 = den2, den
    n = 0
    for t in range(ntime):
        for c in range(nchan):
            bg = num[t, c] / den[t, c] if den[t, c] > 0 else 0.0
            r = amp[t, c] - bg
            z[t, c] = r  # the residual; in sigmas below
            if not mask[t, c]:
                buf[n] = r
                n += 1
    sigma = 0.0
    if n >= 3:
        med = _median_inplace(buf, n, scratch, zf.reshape(-1))
        for i in range(n):
            buf[i] = abs(buf[i] - med)
        sigma = 1.4826 * _median_inplace(buf, n, scratch, zf.reshape(-1))
    for t in range(ntime):
        for c in range(nchan):
            z[t, c] = z[t, c] / sigma if (sigma > 0 and valid[t, c]) else 0.0
    for c in range(nchan):
        for t in range(ntime):
            zf[c, t] = z[t, c]
            mask_f[c, t] = mask[t, c]


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _detect_kernel(vis, base, cross_idx, lo_t, hi_t, lo_f, hi_f, chis_t, chis_f, passes, det, zout):
    ntime, _, nchan, npol = vis.shape
    nx = cross_idx.size
    n_iter = chis_t.shape[0]
    for sp in numba.prange(nx * npol):
        j = sp // npol
        p = sp % npol
        b = cross_idx[j]
        # every buffer of this plane, allocated once
        amp = np.empty((ntime, nchan))
        valid = np.empty((ntime, nchan), np.bool_)
        mask = np.empty((ntime, nchan), np.bool_)
        z = np.empty((ntime, nchan))
        num = np.empty((ntime, nchan))
        den = np.empty((ntime, nchan))
        num2 = np.empty((ntime, nchan))
        den2 = np.empty((ntime, nchan))
        pt = np.empty((ntime + 1, nchan))
        qt = np.empty((ntime + 1, nchan))
        pf = np.empty(nchan + 1)
        qf = np.empty(nchan + 1)
        ct = np.empty((ntime + 1, nchan), np.int64)
        zf = np.empty((nchan, ntime))  # the transposed plane for the frequency direction
        mask_f = np.empty((nchan, ntime), np.bool_)
        pff = np.empty((nchan + 1, ntime))
        cff = np.empty((nchan + 1, ntime), np.int64)
        mt = np.empty((ntime, nchan), np.bool_)
        mf = np.empty((nchan, ntime), np.bool_)
        until_t = np.empty(nchan, np.int64)
        until_f = np.empty(ntime, np.int64)
        buf = np.empty(ntime * nchan)
        scratch = np.empty(ntime * nchan)
        for t in range(ntime):
            for c in range(nchan):
                v = vis[t, b, c, p]
                re = np.float64(v.real)
                im = np.float64(v.imag)
                amp[t, c] = np.sqrt(re * re + im * im)
                valid[t, c] = not base[t, b, c, p]
                mask[t, c] = base[t, b, c, p]
        n_masked = 0
        for t in range(ntime):
            for c in range(nchan):
                n_masked += mask[t, c]
        refit = True
        for it in range(n_iter):
            if refit:  # else the mask did not grow: the background, sigma and z are the last iteration's
                _residual_sigmas(amp, valid, mask, lo_t, hi_t, lo_f, hi_f, passes, num, den, num2, den2, pt, qt, pf, qf,
                                 buf, scratch, z, zf, mask_f)
            max_abs = 0.0
            for t in range(ntime):
                for c in range(nchan):
                    if not mask[t, c]:
                        max_abs = max(max_abs, abs(z[t, c]))
            _sumthreshold_axis0(z, mask, chis_t[it], max_abs, pt, ct, mt, until_t)
            _sumthreshold_axis0(zf, mask_f, chis_f[it], max_abs, pff, cff, mf, until_f)
            grown = 0
            for t in range(ntime):
                for c in range(nchan):
                    mask[t, c] = mt[t, c] or mf[c, t]
                    grown += mask[t, c]
            refit = grown != n_masked
            n_masked = grown
        for t in range(ntime):
            for c in range(nchan):
                det[t, j, c, p] = mask[t, c] and valid[t, c]
                zout[t, j, c, p] = np.float32(z[t, c])


BASELINES_PER_BLOCK = 512  # detection's residuals are kept for one block of baselines at a time


def detect(*, vis: np.ndarray, base: np.ndarray, cross_idx: np.ndarray, lo_t, hi_t, lo_f, hi_f,
           chis_t: np.ndarray, chis_f: np.ndarray, n_iter: int, factor_step: float, clip: float,
           passes: int = 3, block: int = BASELINES_PER_BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background removal + SumThreshold on every cross-correlation plane, ``block`` baselines
    at a time, and the baseline-averaged residual.

    vis: (ntime, nbl, nchan, npol) complex64; base: same shape bool (already bad);
    cross_idx: (nx,) baseline indices to search. Returns (detected (ntime, nx, nchan, npol) bool,
    new flags only; mean (ntime, nchan, npol) float64 over the cross-correlations not in
    ``base`` of the residuals in robust sigmas clipped to ±clip (`baseline_mean` per block, the
    blocks' sums added in order), 0 where none; count (ntime, nchan, npol) int64). The residuals
    themselves never exist for more than one block.
    """
    ntime, _, nchan, npol = vis.shape
    cross_idx = np.asarray(cross_idx, np.int64)
    nx = cross_idx.size
    det = np.empty((ntime, nx, nchan, npol), bool)
    total = np.zeros((ntime, nchan, npol))
    count = np.zeros((ntime, nchan, npol), np.int64)
    factors = [factor_step ** (n_iter - 1 - it) for it in range(n_iter)]
    ct = np.stack([chis_t * f for f in factors])
    cf = np.stack([chis_f * f for f in factors])
    windows = [np.asarray(w, np.int64) for w in (lo_t, hi_t, lo_f, hi_f)]
    zout = np.empty((ntime, min(block, nx), nchan, npol), np.float32)
    for j0 in range(0, nx, block):
        j1 = min(j0 + block, nx)
        z = zout[:, :j1 - j0]
        _detect_kernel(vis, base, cross_idx[j0:j1], *windows, ct, cf, int(passes), det[:, j0:j1], z)
        block_total = np.zeros_like(total)
        _baseline_mean_kernel(z, base, cross_idx[j0:j1], float(clip), block_total, count)
        total += block_total
    return det, np.where(count > 0, total / np.maximum(count, 1), 0.0), count


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sir_axis0(x, eta, w, pmin, cur, out):
    """Scale-invariant rank dilation along axis 0 of an (N, W) bool plane, all W lines at once,
    OR-ed into ``out`` (N, W): a sample is flagged when an interval containing it is flagged
    for at least 1 - eta of its length. W[y] = sum_{i<y} (eta - [not flagged]); flagged iff
    max_{e>y} W[e] >= min_{s<=y} W[s]. w (N + 1, W), pmin (N, W) float64, cur (W,) scratch."""
    n, nw = x.shape
    for c in range(nw):
        w[0, c] = 0.0
    for i in range(n):
        for c in range(nw):
            w[i + 1, c] = w[i, c] + (eta if x[i, c] else eta - 1.0)
    for c in range(nw):
        cur[c] = w[0, c]
    for y in range(n):
        for c in range(nw):
            cur[c] = min(cur[c], w[y, c])
            pmin[y, c] = cur[c]
    for c in range(nw):
        cur[c] = w[n, c]
    for y in range(n - 1, -1, -1):
        for c in range(nw):
            cur[c] = max(cur[c], w[y + 1, c])
            out[y, c] = out[y, c] or cur[c] >= pmin[y, c]


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _dilate_kernel(det, base, cross_idx, combine, eta, out, new_count):
    ntime, nx, nchan, npol = det.shape
    nline = npol if not combine else 1
    for sp in numba.prange(nx * nline):
        j = sp // nline
        p0 = sp % nline
        b = cross_idx[j]
        res = np.zeros((ntime, nchan), np.bool_)
        for t in range(ntime):
            for c in range(nchan):
                if combine:
                    for p in range(npol):
                        res[t, c] = res[t, c] or det[t, j, c, p]
                else:
                    res[t, c] = det[t, j, c, p0]
        if eta > 0:
            dil = np.zeros((ntime, nchan), np.bool_)
            _sir_axis0(res, eta, np.empty((ntime + 1, nchan)), np.empty((ntime, nchan)), np.empty(nchan), dil)
            res_f = np.ascontiguousarray(res.T)
            dil_f = np.zeros((nchan, ntime), np.bool_)
            _sir_axis0(res_f, eta, np.empty((nchan + 1, ntime)), np.empty((nchan, ntime)), np.empty(ntime), dil_f)
            for t in range(ntime):
                for c in range(nchan):
                    dil[t, c] = dil[t, c] or dil_f[c, t]
            res = dil
        n = 0
        for p in range(npol):
            if not combine and p != p0:
                continue
            for t in range(ntime):
                for c in range(nchan):
                    bad = base[t, b, c, p]
                    d = res[t, c] and not bad
                    out[t, j, c, p] = bad or d
                    n += d
        new_count[sp] = n


def combine_and_dilate(*, det: np.ndarray, base: np.ndarray, cross_idx: np.ndarray, combine: bool,
                       eta: float) -> tuple[np.ndarray, int]:
    """OR the polarizations of ``det`` (when ``combine``), dilate along time and frequency
    (scale-invariant rank, ``eta``; 0 = none), and join with the flags already there.

    det: (ntime, nx, nchan, npol) bool, the search's new flags on the cross-correlations
    ``cross_idx`` of ``base`` (ntime, nbl, nchan, npol) bool. Returns (base[:, cross_idx] |
    dilated, the number of samples added to base)."""
    ntime, nx, nchan, npol = det.shape
    out = np.empty(det.shape, bool)
    counts = np.zeros(nx * (1 if combine else npol), np.int64)
    _dilate_kernel(det, base, np.asarray(cross_idx, np.int64), bool(combine), float(eta), out, counts)
    return out, int(counts.sum())


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _baseline_mean_kernel(z, base, cross_idx, clip, total, count):
    ntime, nx, nchan, npol = z.shape
    for t in numba.prange(ntime):
        for j in range(nx):
            b = cross_idx[j]
            for c in range(nchan):
                for p in range(npol):
                    if not base[t, b, c, p]:
                        v = z[t, j, c, p]
                        v = min(max(v, np.float32(-clip)), np.float32(clip))
                        total[t, c, p] += np.float64(v)
                        count[t, c, p] += 1


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _count_axes_kernel(mask, tbp, bcp):
    ntime, nbl, nchan, npol = mask.shape
    for b in numba.prange(nbl):
        for t in range(ntime):
            for p in range(npol):
                s = 0
                for c in range(nchan):
                    v = np.int64(mask[t, b, c, p])
                    s += v
                    bcp[b, c, p] += v
                tbp[t, b, p] = s


def count_axes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flagged samples of ``mask`` (ntime, nbl, nchan, npol) bool summed over channels,
    (ntime, nbl, npol), and over times, (nbl, nchan, npol); int64, one pass."""
    ntime, nbl, nchan, npol = mask.shape
    tbp = np.zeros((ntime, nbl, npol), np.int64)
    bcp = np.zeros((nbl, nchan, npol), np.int64)
    _count_axes_kernel(mask, tbp, bcp)
    return tbp, bcp


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _or_kernel(mask, tbp, bcp, tcp, t_any, c_any, new_count):
    ntime, nbl, nchan, npol = mask.shape
    for b in numba.prange(nbl):
        n = 0
        for t in range(ntime):
            for c in range(nchan):
                for p in range(npol):
                    m = mask[t, b, c, p]
                    w = bcp[b, c, p] | tcp[t, c, p] | c_any[c] | tbp[t, b, p] | t_any[t]
                    n += w & (m ^ 1)
                    mask[t, b, c, p] = m | w
        new_count[b] = n


def or_broadcast(mask: np.ndarray, *, tbp=None, bcp=None, tcp=None, t=None, c=None) -> int:
    """In place: flag every sample of ``mask`` (ntime, nbl, nchan, npol) bool whose (time,
    baseline, pol), (baseline, channel, pol), (time, channel, pol), time or channel is True in
    the given bool arrays (None = none). Returns the number of samples newly flagged."""
    ntime, nbl, nchan, npol = mask.shape
    if not any(a is not None and np.any(a) for a in (tbp, bcp, tcp, t, c)):
        return 0

    def given(a, shape):  # as 0/1 bytes: the kernel's OR then vectorises
        return np.zeros(shape, np.uint8) if a is None else np.ascontiguousarray(a, bool).view(np.uint8)

    counts = np.zeros(nbl, np.int64)
    _or_kernel(mask.view(np.uint8), given(tbp, (ntime, nbl, npol)), given(bcp, (nbl, nchan, npol)), given(tcp, (ntime, nchan, npol)),
               given(t, (ntime,)), given(c, (nchan,)), counts)
    return int(counts.sum())


@numba.njit(parallel=True, cache=True, nogil=True)
def _cross_counts_kernel(mask, rows, per_row, tc_parts):
    ntime, _, nchan, npol = mask.shape
    nrows = rows.size
    n_blocks = tc_parts.shape[0]
    for k in numba.prange(n_blocks):  # a block of rows per thread, each with its own (time, channel) counts
        for j in range(k * nrows // n_blocks, (k + 1) * nrows // n_blocks):
            b = rows[j]
            n = 0
            for t in range(ntime):
                for c in range(nchan):
                    s = 0
                    for p in range(npol):
                        s += mask[t, b, c, p]
                    tc_parts[k, t, c] += s
                    n += s
            per_row[j] = n


def cross_counts(mask: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flagged samples of the baselines ``rows`` of ``mask`` (ntime, nbl, nchan, npol) bool, read
    in place in one pass: per row (nrows,) and per (time, channel) summed over the rows and
    polarizations (ntime, nchan); int64."""
    ntime, _, nchan, _ = mask.shape
    rows = np.ascontiguousarray(rows, np.int64)
    n_blocks = max(1, min(rows.size, 4 * numba.get_num_threads()))
    per_row = np.zeros(rows.size, np.int64)
    tc_parts = np.zeros((n_blocks, ntime, nchan), np.int64)
    _cross_counts_kernel(mask, rows, per_row, tc_parts)
    return per_row, tc_parts.sum(axis=0)

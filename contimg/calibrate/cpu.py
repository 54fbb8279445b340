"""The CPU twins (numba, parallel): accumulations over the data and the StEFCal iteration.

``model[t, mrow[b], c]`` is baseline b's model: the model holds every baseline (mrow = b) or
only the selected ones (compact, `contimg.calibrate.calibrator_model(compact=True)`).

Solution "slots" are what one independent StEFCal problem covers: a channel for the bandpass
(summed over all times), an integration for time-dependent gains (summed over all channels,
the bandpass divided out); the array code of the GPU path (`contimg.calibrate.xp`) computes the
same sums.
"""

from __future__ import annotations

import numba
import numpy as np

# channels per parallel task of the per-channel accumulations: the (time, baseline) loop then
# reads whole cache lines of vis (4 channels x 2 pols of complex64 per 64 bytes)
_CHAN_BLOCK = 8


@numba.njit(parallel=True, cache=True, nogil=True)
def accumulate_per_channel(vis, model, mrow, flags, sel, k1, k2, C, P):
    """C[c, p, i, j] += conj(M) V and P[c, p, i, j] += |M|^2 over times and the selected
    baselines (both orientations), per block of channels in parallel (each sum in the order
    time, then baseline)."""
    ntime, nbl, nchan, npol = vis.shape
    bls = np.flatnonzero(sel)
    for blk in numba.prange((nchan + _CHAN_BLOCK - 1) // _CHAN_BLOCK):
        c0 = blk * _CHAN_BLOCK
        c1 = min(c0 + _CHAN_BLOCK, nchan)
        for t in range(ntime):
            for b in bls:
                i, j = k1[b], k2[b]
                for c in range(c0, c1):
                    m = model[t, mrow[b], c]
                    mm = m.real * m.real + m.imag * m.imag
                    for p in range(npol):
                        if flags[t, b, c, p]:
                            continue
                        x = np.conj(m) * vis[t, b, c, p]
                        C[c, p, i, j] += x
                        C[c, p, j, i] += np.conj(x)
                        P[c, p, i, j] += mm
                        P[c, p, j, i] += mm


@numba.njit(parallel=True, cache=True, nogil=True)
def residual_per_channel(vis, model, mrow, flags, sel, k1, k2, g, out_sum, out_n):
    """Sum over times and selected baselines of |V - g_i conj(g_j) M|^2, and the count, per
    (channel, pol); baselines of an antenna without a solution (g = 0) left out. g: (nchan,
    npol, nant). Blocks of channels in parallel."""
    ntime, nbl, nchan, npol = vis.shape
    bls = np.flatnonzero(sel)
    for blk in numba.prange((nchan + _CHAN_BLOCK - 1) // _CHAN_BLOCK):
        c0 = blk * _CHAN_BLOCK
        c1 = min(c0 + _CHAN_BLOCK, nchan)
        for t in range(ntime):
            for b in bls:
                for c in range(c0, c1):
                    for p in range(npol):
                        if flags[t, b, c, p]:
                            continue
                        gg = g[c, p, k1[b]] * np.conj(g[c, p, k2[b]])
                        if gg == 0:  # an antenna without a solution: not part of the fit
                            continue
                        r = vis[t, b, c, p] - gg * model[t, mrow[b], c]
                        out_sum[c, p] += r.real * r.real + r.imag * r.imag
                        out_n[c, p] += 1.0


@numba.njit(parallel=True, cache=True, nogil=True)
def accumulate_per_time(vis, model, mrow, flags, sel, k1, k2, bp, C, P):
    """C[t, p, i, j] += conj(M') V and P[t, p, i, j] += |M'|^2 over channels and the selected
    baselines, ``M' = bp[c, p, i] conj(bp[c, p, j]) M`` (the bandpass, 0 where flagged, is
    part of the model: what is left to solve is the gain of each integration). Integrations
    in parallel; each sum in the order baseline, then channel."""
    ntime, nbl, nchan, npol = vis.shape
    bls = np.flatnonzero(sel)
    for t in numba.prange(ntime):
        acc = np.zeros(npol, np.complex128)
        pw = np.zeros(npol)
        for b in bls:
            i, j = k1[b], k2[b]
            acc[:] = 0j
            pw[:] = 0.0
            for c in range(nchan):
                m0 = model[t, mrow[b], c]
                for p in range(npol):
                    if flags[t, b, c, p]:
                        continue
                    m = bp[c, p, i] * np.conj(bp[c, p, j]) * m0
                    acc[p] += np.conj(m) * vis[t, b, c, p]
                    pw[p] += m.real * m.real + m.imag * m.imag
            for p in range(npol):
                C[t, p, i, j] += acc[p]
                C[t, p, j, i] += np.conj(acc[p])
                P[t, p, i, j] += pw[p]
                P[t, p, j, i] += pw[p]


@numba.njit(parallel=True, cache=True, nogil=True)
def residual_per_time(vis, model, mrow, flags, sel, k1, k2, bp, g, out_sum, out_n):
    """Sum over channels and selected baselines of |V - G_i conj(G_j) M'|^2 (``M'`` as in
    `accumulate_per_time`, samples with a flagged bandpass or an unsolved antenna left out), and
    the count, per
    (integration, pol). g: (ntime, npol, nant). Integrations in parallel."""
    ntime, nbl, nchan, npol = vis.shape
    bls = np.flatnonzero(sel)
    for t in numba.prange(ntime):
        for b in bls:
            i, j = k1[b], k2[b]
            for c in range(nchan):
                m0 = model[t, mrow[b], c]
                for p in range(npol):
                    if flags[t, b, c, p]:
                        continue
                    gb = g[t, p, i] * np.conj(g[t, p, j]) * bp[c, p, i] * np.conj(bp[c, p, j])
                    if gb == 0:  # a flagged bandpass or an antenna without a solution: not part of the fit
                        continue
                    r = vis[t, b, c, p] - gb * m0
                    out_sum[t, p] += r.real * r.real + r.imag * r.imag
                    out_n[t, p] += 1.0


@numba.njit(parallel=True, cache=True, nogil=True)
def stefcal(C, P, pi, pj, max_iter, tolerance, phase_only, g, change, iters):
    """StEFCal for each (slot, polarization) independently, in parallel; each stops when its
    own ||g_new - g|| / ||g_new|| is below ``tolerance`` (or after ``max_iter``).

    ``g_i <- sum_j C_ij g_j / sum_j P_ij |g_j|^2`` (0 where the denominator is 0), every second
    update averaged with the previous one; ``phase_only``: each update divided by its modulus.
    C: (nslot, npol, nant, nant) complex128, P: same float64, both zero except at the antenna
    pairs (pi[e], pj[e]) and (pj[e], pi[e]) (each pair once, pi != pj): the sums run over
    those only; g: (nslot, npol, nant) complex128, the start in, the solution out; change:
    (nslot, npol) the last relative change; iters: (nslot, npol) the iterations run."""
    nslot, npol, nant, _ = C.shape
    for sp in numba.prange(nslot * npol):
        s, p = sp // npol, sp % npol
        Cs, Ps = C[s, p], P[s, p]
        cur = g[s, p].copy()
        new = np.empty(nant, np.complex128)
        amp2 = np.empty(nant)
        num = np.empty(nant, np.complex128)
        den = np.empty(nant)
        it = 0
        ch = 0.0
        for it in range(1, max_iter + 1):
            for j in range(nant):
                amp2[j] = cur[j].real * cur[j].real + cur[j].imag * cur[j].imag
            num[:] = 0j
            den[:] = 0.0
            for e in range(pi.size):
                i, j = pi[e], pj[e]
                num[i] += Cs[i, j] * cur[j]
                den[i] += Ps[i, j] * amp2[j]
                num[j] += Cs[j, i] * cur[i]
                den[j] += Ps[j, i] * amp2[i]
            dn, nn = 0.0, 0.0
            for i in range(nant):
                x = num[i] / den[i] if den[i] > 0 else 0j
                if phase_only and x != 0:
                    x = x / abs(x)
                if it % 2 == 0:
                    x = 0.5 * (x + cur[i])
                    if phase_only and x != 0:
                        x = x / abs(x)
                d = x - cur[i]
                dn += d.real * d.real + d.imag * d.imag
                nn += x.real * x.real + x.imag * x.imag
                new[i] = x
            cur[:] = new
            ch = np.sqrt(dn) / max(np.sqrt(nn), 1e-30)
            if ch < tolerance:
                break
        g[s, p] = cur
        change[s, p] = ch
        iters[s, p] = it


@numba.njit(parallel=True, cache=True, nogil=True)
def apply_inverse(vis, flags, inv, bad, inv_t, bad_t):
    """In place: ``vis[t, b, c, p] *= inv[b, c, p] * inv_t[t, b, p]`` and ``flags |= bad |
    bad_t`` (inverse bandpass and time-gain products per baseline; inv_t/bad_t of shape
    (1, nbl, npol) all ones/False when there are no time gains). Integrations x baselines in
    parallel."""
    ntime, nbl, nchan, npol = vis.shape
    per_time = inv_t.shape[0] > 1
    for tb in numba.prange(ntime * nbl):
        t, b = tb // nbl, tb % nbl
        tt = t if per_time else 0
        for c in range(nchan):
            for p in range(npol):
                vis[t, b, c, p] *= inv[b, c, p] * inv_t[tt, b, p]
                if bad[b, c, p] or bad_t[tt, b, p]:
                    flags[t, b, c, p] = True

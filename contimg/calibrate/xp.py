"""The device path's array code (``xp`` = cupy on a GPU, numpy in CI): the same sums and the
same StEFCal iteration as the numba twins in `contimg.calibrate.cpu`, vectorised over all
solution slots at once instead of looping over them.

The accumulations reduce the data to per-baseline sums and scatter them into dense
(slot, pol, nant, nant) matrices (each baseline is one unordered antenna pair, so the scatter
writes every element once); StEFCal then is two batched matrix-vector products per iteration.
The data are read in blocks of integrations so the temporaries stay small on the device.
``mrows``: the model's row of each baseline in ``bls`` (the model holds all baselines or only
the selected ones).
"""

from __future__ import annotations

import numpy as np

_BLOCK_BYTES = 256 * 2**20  # temporaries per block of integrations


def _time_blocks(ntime: int, per_time_bytes: int):
    n = max(1, _BLOCK_BYTES // max(per_time_bytes, 1))
    for t0 in range(0, ntime, n):
        yield slice(t0, min(t0 + n, ntime))


def _indices(*, xp, bls, mrows, k1, k2):
    """The index arrays on the device: baselines, their model rows, their antenna indices."""
    return xp.asarray(bls), xp.asarray(mrows), xp.asarray(k1[bls]), xp.asarray(k2[bls])


def _scatter(*, xp, sums, weights, k1, k2, nant: int):
    """(nslot, npol, nbl) per-baseline sums → dense C (nslot, npol, nant, nant) complex128 and
    P float64, both orientations."""
    nslot, npol = sums.shape[:2]
    C = xp.zeros((nslot, npol, nant, nant), np.complex128)
    P = xp.zeros((nslot, npol, nant, nant), np.float64)
    C[:, :, k1, k2] = sums
    C[:, :, k2, k1] = xp.conj(sums)
    P[:, :, k1, k2] = weights
    P[:, :, k2, k1] = weights
    return C, P


def accumulate_per_channel(*, xp, vis, model, mrows, flags, bls, k1, k2, nant: int):
    """As `cpu.accumulate_per_channel`: C, P of shape (nchan, npol, nant, nant) summed over
    times and the baselines ``bls`` (indices, one per antenna pair)."""
    ntime, _, nchan, npol = vis.shape
    b, rows, i1, i2 = _indices(xp=xp, bls=bls, mrows=mrows, k1=k1, k2=k2)
    sums = xp.zeros((len(bls), nchan, npol), np.complex128)
    weights = xp.zeros((len(bls), nchan, npol), np.float64)
    for ts in _time_blocks(ntime, len(bls) * nchan * npol * 24):
        v = vis[ts][:, b]
        m = model[ts][:, rows][..., None]
        ok = ~flags[ts][:, b]
        sums += (xp.conj(m) * v * ok).sum(axis=0, dtype=np.complex128)
        weights += ((m.real**2 + m.imag**2) * ok).sum(axis=0, dtype=np.float64)
    return _scatter(xp=xp, sums=sums.transpose(1, 2, 0), weights=weights.transpose(1, 2, 0),
                    k1=i1, k2=i2, nant=nant)


def residual_per_channel(*, xp, vis, model, mrows, flags, bls, k1, k2, g):
    """As `cpu.residual_per_channel`: (sum |V - g_i conj(g_j) M|^2, count), each (nchan, npol);
    baselines of an antenna without a solution left out."""
    ntime, _, nchan, npol = vis.shape
    b, rows, i1, i2 = _indices(xp=xp, bls=bls, mrows=mrows, k1=k1, k2=k2)
    gi = g[:, :, i1].transpose(2, 0, 1)  # (nbl, nchan, npol)
    gj = g[:, :, i2].transpose(2, 0, 1)
    gg = (gi * xp.conj(gj)).astype(np.complex64)
    out_sum = xp.zeros((nchan, npol))
    out_n = xp.zeros((nchan, npol))
    for ts in _time_blocks(ntime, len(bls) * nchan * npol * 24):
        ok = ~flags[ts][:, b] & (gg != 0)[None]
        r = vis[ts][:, b] - gg[None] * model[ts][:, rows][..., None]
        out_sum += ((r.real**2 + r.imag**2) * ok).sum(axis=(0, 1), dtype=np.float64)
        out_n += ok.sum(axis=(0, 1))
    return out_sum, out_n


def accumulate_per_time(*, xp, vis, model, mrows, flags, bls, k1, k2, bp, nant: int):
    """As `cpu.accumulate_per_time`: C, P of shape (ntime, npol, nant, nant) summed over
    channels and the baselines ``bls``, with the model ``bp_i conj(bp_j) M``."""
    ntime, _, nchan, npol = vis.shape
    b, rows, i1, i2 = _indices(xp=xp, bls=bls, mrows=mrows, k1=k1, k2=k2)
    bb = (bp[:, :, i1] * xp.conj(bp[:, :, i2])).transpose(2, 0, 1)  # (nbl, nchan, npol)
    sums = xp.zeros((ntime, len(bls), npol), np.complex128)
    weights = xp.zeros((ntime, len(bls), npol), np.float64)
    for ts in _time_blocks(ntime, len(bls) * nchan * npol * 24):
        m = (bb[None] * model[ts][:, rows][..., None]).astype(np.complex64)
        ok = ~flags[ts][:, b]
        sums[ts] = (xp.conj(m) * vis[ts][:, b] * ok).sum(axis=2, dtype=np.complex128)
        weights[ts] = ((m.real**2 + m.imag**2) * ok).sum(axis=2, dtype=np.float64)
    return _scatter(xp=xp, sums=sums.transpose(0, 2, 1), weights=weights.transpose(0, 2, 1),
                    k1=i1, k2=i2, nant=nant)


def residual_per_time(*, xp, vis, model, mrows, flags, bls, k1, k2, bp, g):
    """As `cpu.residual_per_time`: (sum |V - G_i conj(G_j) M'|^2, count), each (ntime, npol);
    samples whose bandpass (flagged) or gain (unsolved antenna) is 0 left out."""
    ntime, _, nchan, npol = vis.shape
    b, rows, i1, i2 = _indices(xp=xp, bls=bls, mrows=mrows, k1=k1, k2=k2)
    bb = (bp[:, :, i1] * xp.conj(bp[:, :, i2])).transpose(2, 0, 1)  # (nbl, nchan, npol)
    out_sum = xp.zeros((ntime, npol))
    out_n = xp.zeros((ntime, npol))
    for ts in _time_blocks(ntime, len(bls) * nchan * npol * 24):
        gg = (g[ts][:, :, i1] * xp.conj(g[ts][:, :, i2])).transpose(0, 2, 1)  # (nt, nbl, npol)
        gb = (gg[:, :, None, :] * bb[None]).astype(np.complex64)  # (nt, nbl, nchan, npol)
        ok = ~flags[ts][:, b] & (gb != 0)
        r = vis[ts][:, b] - gb * model[ts][:, rows][..., None]
        out_sum[ts] = ((r.real**2 + r.imag**2) * ok).sum(axis=(1, 2), dtype=np.float64)
        out_n[ts] = ok.sum(axis=(1, 2))
    return out_sum, out_n


def stefcal(*, xp, C, P, max_iter: int, tolerance: float, phase_only: bool, g):
    """As `cpu.stefcal` for all (slot, pol) at once; a (slot, pol) that has converged keeps its
    gains while the others go on. C, P: (nslot, npol, nant, nant); g: (nslot, npol, nant)
    complex128, the start. Returns (g, change (nslot, npol), iters (nslot, npol))."""
    nslot, npol, nant, _ = C.shape
    cur = g.copy()
    active = xp.ones((nslot, npol), bool)
    change = xp.zeros((nslot, npol))
    iters = xp.zeros((nslot, npol), np.int64)
    for it in range(1, max_iter + 1):
        num = xp.einsum("spij,spj->spi", C, cur)
        den = xp.einsum("spij,spj->spi", P, cur.real**2 + cur.imag**2)
        x = xp.where(den > 0, num / xp.where(den > 0, den, 1.0), 0)
        if phase_only:
            x = xp.where(x != 0, x / xp.where(x != 0, xp.abs(x), 1.0), 0)
        if it % 2 == 0:
            x = 0.5 * (x + cur)
            if phase_only:
                x = xp.where(x != 0, x / xp.where(x != 0, xp.abs(x), 1.0), 0)
        d = x - cur
        ch = xp.sqrt((d.real**2 + d.imag**2).sum(axis=2)) / xp.maximum(xp.sqrt((x.real**2 + x.imag**2).sum(axis=2)), 1e-30)
        cur = xp.where(active[:, :, None], x, cur)
        change = xp.where(active, ch, change)
        iters = xp.where(active, it, iters)
        active &= ~(ch < tolerance)
        if not bool(active.any()):
            break
    return cur, change, iters

"""Waterfall rows: mean amplitude over a selection of cross-correlations, time × frequency bins,
with the flagged fraction of each cell — what the web view scrolls as groups are read."""

from __future__ import annotations

import numpy as np

from contimg.bus import Waterfall, parse_selection

__all__ = ["waterfall_rows", "waterfall_events"]

_POL_NAMES = {-5: "XX", -6: "YY", -7: "XY", -8: "YX", -1: "RR", -2: "LL", -3: "RL", -4: "LR", 1: "I"}  # AIPS codes
def waterfall_rows(*, vis: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray, pols: list[str],
                   selection: str, pol: str, n_bins: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """Mean |V| of the unflagged cross-correlations in ``selection`` for ``pol`` (or ``I``, the
    mean of the first and last polarization), averaged into at most ``n_bins`` channel bins.

    vis (ntime, nbl, nchan, npol) complex64, flags bool, ant1/ant2 (nbl,) antenna numbers, pols
    AIPS polarization codes (-5 = XX) or names.
    Returns amp (ntime, nbins) float32 (NaN where all is flagged) and the flagged fraction
    (ntime, nbins) float32. Raises ValueError for an unknown selection or polarization, or a
    selection with no cross-correlation.
    """
    kind, nums = parse_selection(selection)
    cross = ant1 != ant2
    if kind == "ant":
        sel = cross & ((ant1 == nums[0]) | (ant2 == nums[0]))
    elif kind == "bl":
        a, b = nums
        sel = ((ant1 == a) & (ant2 == b)) | ((ant1 == b) & (ant2 == a))
    else:
        sel = cross
    idx = np.flatnonzero(sel)
    if idx.size == 0:
        raise ValueError(f"waterfall selection {selection!r}: no such cross-correlation")
    names = [_POL_NAMES.get(int(p), str(p)) if not isinstance(p, str) else p.upper() for p in pols]
    if pol.upper() == "I":
        pidx = [0, len(names) - 1]
    elif pol.upper() in names:
        pidx = [names.index(pol.upper())]
    else:
        raise ValueError(f"waterfall polarization {pol!r}: have {names} or I")
    ntime, _, nchan, _ = vis.shape
    nbins = min(n_bins, nchan)
    edges = np.linspace(0, nchan, nbins + 1).astype(int)
    amp_sum = np.zeros((ntime, nchan), np.float64)
    n_good = np.zeros((ntime, nchan), np.int64)
    for t in range(ntime):  # one integration at a time keeps the temporaries small
        for p in pidx:
            v = vis[t, idx, :, p]
            good = ~flags[t, idx, :, p]
            amp_sum[t] += np.where(good, np.abs(v), 0.0).sum(axis=0)
            n_good[t] += good.sum(axis=0)
    n_all = idx.size * len(pidx)
    s = np.add.reduceat(amp_sum, edges[:-1], axis=1)
    g = np.add.reduceat(n_good, edges[:-1], axis=1)
    width = np.diff(edges)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        amp = np.where(g > 0, s / g, np.nan).astype(np.float32)
    flagged = (1.0 - g / (n_all * width)).astype(np.float32)
    return amp, flagged


def waterfall_events(chunk, keys: list[tuple[str, str]], n_bins: int) -> list[Waterfall]:
    """`Waterfall` events of a freshly read `VisChunk` for every (selection, pol) in ``keys``
    (selections with no data in this group are left out)."""
    out = []
    time_mjd = [float(t - 2400000.5) for t in chunk.time_jd]
    for selection, pol in keys:
        try:
            amp, flagged = waterfall_rows(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                                          pols=list(chunk.pols), selection=selection, pol=pol, n_bins=n_bins)
        except ValueError:  # e.g. an antenna that is not in this group
            continue
        nchan = chunk.freq_hz.size
        edges = np.linspace(0, nchan, amp.shape[1] + 1).astype(int)
        freq_mhz = [float(chunk.freq_hz[a:b].mean() / 1e6) for a, b in zip(edges[:-1], edges[1:])]
        amp_rows = [[None if not np.isfinite(x) else round(float(x), 6) for x in row] for row in amp]
        out.append(Waterfall(chunk.group_id, selection, pol, time_mjd, freq_mhz, amp_rows, flagged.round(3).tolist()))
    return out

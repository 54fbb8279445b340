"""Waterfall rows: mean amplitude over a selection of cross-correlations, time × frequency bins,
with the flagged fraction of each cell — what the web view scrolls as groups are read.

They are computed from the host buffer the reader filled, in the reader's thread, before the
group is uploaded or changed: nothing comes back from a device for them. One pass over the
selection's rows (`_abs_sums`, numba) gives every polarization at once, so the two default
selections (``avg`` XX and YY) read the group once."""

from __future__ import annotations

import numba
import numpy as np
from pyuvdata.utils import polnum2str

from contimg.bus import Waterfall, parse_selection

__all__ = ["waterfall_rows", "waterfall_events", "selection_rows", "polarization_indices"]



@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _abs_sums(vis, flags, rows, amp_sum, n_good):
    """amp_sum[t, k] += |vis[t, r, k]| and n_good[t, k] += 1 over the unflagged samples of the
    baselines ``rows`` (k: channel × polarization, flattened); one pass, parallel over time, each
    integration summed in float32 (a display: ~1e-6 relative) and added to the float64 sums."""
    ntime, _, nk = vis.shape
    for t in numba.prange(ntime):
        acc = np.zeros(nk, np.float32)
        cnt = np.zeros(nk, np.int32)
        for r in rows:
            v = vis[t, r]
            f = flags[t, r]
            for k in range(nk):
                acc[k] += (np.float32(1) - np.float32(f[k])) * np.sqrt(v[k].real * v[k].real + v[k].imag * v[k].imag)
                cnt[k] += np.int32(1) - np.int32(f[k])
        for k in range(nk):
            amp_sum[t, k] += acc[k]
            n_good[t, k] += cnt[k]


def selection_rows(*, ant1: np.ndarray, ant2: np.ndarray, selection: str) -> np.ndarray:
    """The baseline indices (int64) of ``selection`` (``avg``: every cross-correlation; ``ant:N``:
    antenna N's; ``bl:A-B``: that baseline's). ValueError for an unknown selection or one with no
    cross-correlation."""
    kind, nums = parse_selection(selection)
    cross = ant1 != ant2
    if kind == "ant":
        sel = cross & ((ant1 == nums[0]) | (ant2 == nums[0]))
    elif kind == "bl":
        a, b = nums
        sel = cross & (((ant1 == a) & (ant2 == b)) | ((ant1 == b) & (ant2 == a)))
    else:
        sel = cross
    idx = np.flatnonzero(sel).astype(np.int64)
    if idx.size == 0:
        raise ValueError(f"waterfall selection {selection!r}: no such cross-correlation")
    return idx


def polarization_indices(*, pols, pol: str) -> list[int]:
    """The polarization axis indices that make ``pol``: its own, or for ``I`` the first and last
    (XX and YY). ``pols``: AIPS codes (-5 = XX) or names. ValueError for one not in the data."""
    names = [p.upper() if isinstance(p, str) else str(polnum2str(int(p))).upper() for p in pols]  # AIPS codes: pyuvdata's names
    if pol.upper() == "I":
        return [0, len(names) - 1]
    if pol.upper() in names:
        return [names.index(pol.upper())]
    raise ValueError(f"waterfall polarization {pol!r}: have {names} or I")


def _selection_sums(*, vis: np.ndarray, flags: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (time, channel, pol): the sum of |V| (float64) and the count (int64) of the unflagged
    samples of the baselines ``rows``."""
    ntime, nbl, nchan, npol = vis.shape
    amp_sum = np.zeros((ntime, nchan * npol), np.float64)
    n_good = np.zeros((ntime, nchan * npol), np.int64)
    _abs_sums(vis.reshape(ntime, nbl, nchan * npol), flags.reshape(ntime, nbl, nchan * npol).view(np.uint8),
              rows, amp_sum, n_good)
    return amp_sum.reshape(ntime, nchan, npol), n_good.reshape(ntime, nchan, npol)


def _binned(*, amp_sum: np.ndarray, n_good: np.ndarray, n_rows: int, pidx: list[int],
            n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(amp, flagged, edges) of one polarization choice from a selection's sums."""
    s = amp_sum[:, :, pidx].sum(axis=2)
    g = n_good[:, :, pidx].sum(axis=2)
    nchan = s.shape[1]
    edges = np.linspace(0, nchan, min(n_bins, nchan) + 1).astype(int)
    s = np.add.reduceat(s, edges[:-1], axis=1)
    g = np.add.reduceat(g, edges[:-1], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        amp = np.where(g > 0, s / g, np.nan).astype(np.float32)
    flagged = (1.0 - g / (n_rows * len(pidx) * np.diff(edges)[None, :])).astype(np.float32)
    return amp, flagged, edges


def waterfall_rows(*, vis: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray, pols: list,
                   selection: str, pol: str, n_bins: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """Mean |V| of the unflagged cross-correlations in ``selection`` for ``pol`` (or ``I``, the
    mean of the first and last polarization), averaged into at most ``n_bins`` channel bins of
    equal channel counts.

    vis (ntime, nbl, nchan, npol) complex64 and flags bool, host arrays; ant1/ant2 (nbl,) antenna
    numbers; pols AIPS polarization codes (-5 = XX) or names.
    Returns amp (ntime, nbins) float32 (NaN where all is flagged) and the flagged fraction
    (ntime, nbins) float32. Raises ValueError for an unknown selection or polarization, or a
    selection with no cross-correlation.
    """
    rows = selection_rows(ant1=np.asarray(ant1), ant2=np.asarray(ant2), selection=selection)
    pidx = polarization_indices(pols=pols, pol=pol)
    amp_sum, n_good = _selection_sums(vis=vis, flags=flags, rows=rows)
    amp, flagged, _ = _binned(amp_sum=amp_sum, n_good=n_good, n_rows=rows.size, pidx=pidx, n_bins=n_bins)
    return amp, flagged


def waterfall_events(chunk, keys: list[tuple[str, str]], n_bins: int) -> list[Waterfall]:
    """`Waterfall` events of a freshly read `VisChunk` (host arrays) for every (selection, pol) in
    ``keys``; each selection's rows are read once for all its polarizations. Selections or
    polarizations this group does not have (an antenna that is not in it) are left out."""
    out = []
    time_mjd = [float(t - 2400000.5) for t in chunk.time_jd]
    by_selection: dict[str, list[str]] = {}
    for selection, pol in keys:
        by_selection.setdefault(selection, []).append(pol)
    for selection, pols in by_selection.items():
        try:
            rows = selection_rows(ant1=chunk.ant1, ant2=chunk.ant2, selection=selection)
        except ValueError:
            continue
        sums = None
        for pol in pols:
            try:
                pidx = polarization_indices(pols=list(chunk.pols), pol=pol)
            except ValueError:
                continue
            if sums is None:
                sums = _selection_sums(vis=chunk.vis, flags=chunk.flags, rows=rows)
            amp, flagged, edges = _binned(amp_sum=sums[0], n_good=sums[1], n_rows=rows.size, pidx=pidx,
                                          n_bins=n_bins)
            freq_mhz = [float(chunk.freq_hz[a:b].mean() / 1e6) for a, b in zip(edges[:-1], edges[1:])]
            amp_rows = [[None if not np.isfinite(x) else round(float(x), 6) for x in row] for row in amp]
            out.append(Waterfall(chunk.group_id, selection, pol, time_mjd, freq_mhz, amp_rows,
                                 flagged.round(3).tolist()))
    return out

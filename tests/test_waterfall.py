"""The waterfall's rows (numba, one pass per selection) against numpy written out plainly."""

from types import SimpleNamespace

import numpy as np
import pytest

from contimg.qa.waterfall import waterfall_events, waterfall_rows


def _chunk(seed=3, ntime=5, nant=6, nchan=50):
    rng = np.random.default_rng(seed)
    a1, a2 = np.triu_indices(nant)  # autocorrelations included, as the files have them
    nbl = a1.size
    vis = (rng.normal(size=(ntime, nbl, nchan, 2)) + 1j * rng.normal(size=(ntime, nbl, nchan, 2))).astype(np.complex64)
    vis *= rng.uniform(0.5, 20, size=(1, nbl, 1, 1)).astype(np.float32)
    flags = rng.random(vis.shape) < 0.3
    flags[2, :, 6:12, :] = True  # every cross-correlation flagged in these cells (bins 2 and 3 of 16)
    return SimpleNamespace(vis=vis, flags=flags, ant1=a1 + 10, ant2=a2 + 10, pols=[-5, -6], group_id="g",
                           time_jd=2460000.5 + np.arange(ntime) * 12.0 / 86400, freq_hz=1.3e9 + np.arange(nchan) * 2e5)


def _numpy_rows(chunk, rows, pidx, n_bins):
    nchan = chunk.vis.shape[2]
    edges = np.linspace(0, nchan, min(n_bins, nchan) + 1).astype(int)
    amp, flagged = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        v = np.abs(chunk.vis[:, rows][:, :, lo:hi][..., pidx].astype(np.complex128))
        good = ~chunk.flags[:, rows][:, :, lo:hi][..., pidx]
        n = good.sum(axis=(1, 2, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            amp.append(np.where(n > 0, (v * good).sum(axis=(1, 2, 3)) / n, np.nan))
        flagged.append(1 - n / good[0].size)
    return np.stack(amp, axis=1), np.stack(flagged, axis=1)


@pytest.mark.parametrize("selection, pol, rows, pidx", [
    ("avg", "XX", None, [0]),
    ("avg", "I", None, [0, 1]),
    ("ant:12", "YY", "ant12", [1]),
    ("bl:14-11", "I", "bl", [0, 1]),
])
def test_waterfall_rows_equal_numpy(selection, pol, rows, pidx):
    chunk = _chunk()
    cross = chunk.ant1 != chunk.ant2
    if rows is None:
        idx = np.flatnonzero(cross)
    elif rows == "ant12":
        idx = np.flatnonzero(cross & ((chunk.ant1 == 12) | (chunk.ant2 == 12)))
    else:
        idx = np.flatnonzero((chunk.ant1 == 11) & (chunk.ant2 == 14))
    expect_amp, expect_flagged = _numpy_rows(chunk, idx, pidx, 16)
    amp, flagged = waterfall_rows(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2, pols=chunk.pols,
                                  selection=selection, pol=pol, n_bins=16)
    assert amp.shape == (5, 16) and amp.dtype == np.float32
    np.testing.assert_allclose(amp, expect_amp, rtol=2e-6)
    np.testing.assert_allclose(flagged, expect_flagged, atol=1e-6)
    if rows is None:  # the cells flagged on every cross-correlation are NaN and wholly flagged
        assert np.isnan(amp[2, 2:4]).all() and np.all(flagged[2, 2:4] == 1)


def test_waterfall_events_share_one_pass_and_skip_what_the_group_lacks():
    chunk = _chunk()
    events = waterfall_events(chunk, [("avg", "XX"), ("avg", "YY"), ("ant:99", "XX"), ("avg", "XY"), ("ant:13", "I")], 8)
    assert [(e.selection, e.pol) for e in events] == [("avg", "XX"), ("avg", "YY"), ("ant:13", "I")]
    for e in events:
        amp, flagged = waterfall_rows(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                                      pols=chunk.pols, selection=e.selection, pol=e.pol, n_bins=8)
        got = np.array([[np.nan if x is None else x for x in row] for row in e.amp])
        np.testing.assert_allclose(got, amp, rtol=1e-5)
        assert len(e.freq_mhz) == 8 and e.freq_mhz[0] == pytest.approx(chunk.freq_hz[:6].mean() / 1e6)
        assert len(e.time_mjd) == 5


@pytest.mark.parametrize("selection, pol, message", [
    ("ant:99", "XX", "no such cross-correlation"),
    ("bl:11-11", "XX", "no such cross-correlation"),  # an autocorrelation is not a waterfall's
    ("nonsense", "XX", "expected avg"),
    ("avg", "RR", "have ['XX', 'YY'] or I"),
])
def test_waterfall_rows_refuse_what_is_not_there(selection, pol, message):
    chunk = _chunk()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        waterfall_rows(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2, pols=chunk.pols,
                       selection=selection, pol=pol)

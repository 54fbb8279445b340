"""Baseline-dependent averaging in time (`contimg.imaging.prep`) against plain loops, and an
image of averaged visibilities against ducc0's image of the unaveraged ones."""

from __future__ import annotations

import numpy as np

from contimg.imaging.prep import average_times, time_factors, weight_per_time


def _uvw_steps(rates: list[float], ntime: int) -> np.ndarray:
    """(ntime, ncross, 3): baseline j moves ``rates[j]`` m per integration along u."""
    t = np.arange(ntime, dtype=np.float64)
    uvw = np.zeros((ntime, len(rates), 3))
    uvw[:, :, 0] = 100.0 + t[:, None] * np.asarray(rates)[None, :]
    uvw[:, :, 1] = 50.0
    return uvw


def test_factors_are_divisors_that_keep_each_step_within_the_fastest():
    uvw = _uvw_steps([1.0, 0.5, 0.34, 0.2, 0.12, 0.0], ntime=24)
    # allowed 1, 2, 2.9 -> 2, 5 -> 4, 8.3 -> 8, a baseline that does not move: the cap
    assert time_factors(uvw_m=uvw, max_factor=8).tolist() == [1, 2, 2, 4, 8, 8]
    assert time_factors(uvw_m=uvw, max_factor=3).tolist() == [1, 2, 2, 3, 3, 3]
    assert time_factors(uvw_m=uvw, max_factor=1).tolist() == [1] * 6
    # a fraction of the fastest's step: 0.5 / 0.34 -> 1, 0.5 / 0.2 -> 2, 0.5 / 0.12 -> 4
    assert time_factors(uvw_m=uvw, max_factor=8, step_fraction=0.5).tolist() == [1, 1, 1, 2, 4, 8]
    f = time_factors(uvw_m=uvw, max_factor=24)
    steps = np.abs(np.diff(uvw[:, :, 0], axis=0)).max(axis=0)
    assert np.all(24 % f == 0) and np.all(f * steps <= steps.max() * (1 + 1e-9))


def test_averaged_rows_are_weighted_means_at_the_mean_uvw():
    rng = np.random.default_rng(5)
    ntime, ncross, nchan = 12, 7, 5
    factors = np.array([1, 3, 2, 3, 1, 6, 2])
    uvw = rng.normal(0, 300, (ntime * ncross, 3))
    vis = (rng.normal(size=(ntime * ncross, nchan)) + 1j * rng.normal(size=(ntime * ncross, nchan))).astype(np.complex64)
    wgt = rng.uniform(0.5, 2, (ntime * ncross, nchan)).astype(np.float32)
    wgt[rng.random(wgt.shape) < 0.3] = 0
    wgt.reshape(ntime, ncross, nchan)[0:3, 1, 2] = 0  # one averaged sample with no weight at all
    ouvw, ovis, owgt, groups = average_times(uvw_m=uvw, vis=vis, wgt=wgt, ntime=ntime, factors=factors,
                                             block_bytes=200)  # several blocks per group
    assert groups == [(1, 2), (2, 2), (3, 2), (6, 1)]
    u3, v3, w3 = uvw.reshape(ntime, ncross, 3), vis.reshape(ntime, ncross, nchan), wgt.reshape(ntime, ncross, nchan)
    row = 0
    for f, n in groups:
        sel = np.flatnonzero(factors == f)
        for k in range(ntime // f):
            for j in sel:
                ts = slice(k * f, (k + 1) * f)
                wsum = w3[ts, j].astype(np.float64).sum(axis=0)
                want = np.where(wsum > 0, (v3[ts, j] * w3[ts, j]).sum(axis=0) / np.where(wsum > 0, wsum, 1), 0)
                np.testing.assert_allclose(ouvw[row], u3[ts, j].mean(axis=0), rtol=1e-12)
                np.testing.assert_allclose(owgt[row], wsum, rtol=1e-6)
                np.testing.assert_allclose(ovis[row], want, rtol=1e-5, atol=1e-6)
                row += 1
    assert row == ouvw.shape[0] == ovis.shape[0]
    # the weight per integration and channel: the total kept, and exact without averaging
    tf = weight_per_time(wgt=owgt, ntime=ntime, groups=groups)
    np.testing.assert_allclose(tf.sum(axis=0), wgt.astype(np.float64).sum(axis=0), rtol=1e-6)
    plain = weight_per_time(wgt=wgt, ntime=ntime, groups=[(1, ncross)])
    np.testing.assert_allclose(plain, w3.astype(np.float64).sum(axis=1), rtol=1e-12)


def test_no_averaging_returns_the_input():
    uvw = np.zeros((6, 3))
    vis = np.ones((6, 2), np.complex64)
    wgt = np.ones((6, 2), np.float32)
    out = average_times(uvw_m=uvw, vis=vis, wgt=wgt, ntime=3, factors=np.ones(2, int))
    assert out[1] is vis and out[2] is wgt and out[3] == [(1, 2)]


def test_the_image_of_averaged_visibilities_is_the_image_within_the_smearing_bound():
    """A drift-scan-like track: point sources, one at the phase centre and one near the field's
    edge, their visibilities computed exactly per integration; the dirty image of the averaged
    samples (ducc0) against that of the unaveraged ones: the centre source exact, the edge
    source within the time-smearing bound of the fastest baseline over one integration."""
    import ducc0.wgridder.experimental as wg

    rng = np.random.default_rng(2)
    ntime, ncross = 24, 300
    freq = np.linspace(1.40e9, 1.41e9, 4)
    lengths = rng.uniform(30, 2500, ncross)
    angle = rng.uniform(0, np.pi, ncross)
    omega = 7.29e-5 * 13.0  # rad per 13 s integration
    t = np.arange(ntime) - ntime / 2
    ang = angle[None, :] + omega * t[:, None]
    uvw = np.stack([lengths * np.cos(ang), lengths * np.sin(ang) * 0.6, np.zeros_like(ang)], axis=2)  # (t, b, 3)
    npix, cell = 256, np.radians(20 / 3600)
    l0, m0 = 100 * cell, -80 * cell  # ~0.6 deg from the centre
    k = 2 * np.pi * freq / 299792458.0
    phase = (uvw[:, :, 0, None] * l0 + uvw[:, :, 1, None] * m0) * k
    vis = (1.0 + 0.5 * np.exp(1j * phase)).astype(np.complex64).reshape(ntime * ncross, freq.size)
    wgt = np.ones(vis.shape, np.float32)
    factors = time_factors(uvw_m=uvw, max_factor=8)  # (step_fraction 1: the bound below)
    assert factors.max() == 8 and factors.min() == 1
    ua, va, wa, groups = average_times(uvw_m=uvw.reshape(-1, 3), vis=vis, wgt=wgt, ntime=ntime, factors=factors)
    assert ua.shape[0] < 0.6 * ntime * ncross

    def image(u, v, w):
        img = wg.vis2dirty(uvw=u, freq=freq, vis=v, wgt=w, npix_x=npix, npix_y=npix, pixsize_x=cell, pixsize_y=cell,
                           epsilon=1e-6, do_wgridding=False, flip_v=True)
        return img / w.sum()

    full, avg = image(uvw.reshape(-1, 3), vis, wgt), image(ua, va, wa)
    c = npix // 2
    x, y = c + int(round(-l0 / cell)), c + int(round(m0 / cell))
    # ducc0 (x, y) order with flip_v: x = -l (east left), y = m; find the edge source's peak near there
    box = np.s_[x - 3:x + 4, y - 3:y + 4]
    assert abs(avg[c, c] - full[c, c]) < 2e-3
    # the fastest baseline's phase change across one integration at the edge source, in radians
    fastest = np.linalg.norm(np.diff(uvw, axis=0), axis=2).max() * k.max() * np.hypot(l0, m0)
    loss_bound = fastest**2 / 24 * 1.5  # 1 - sinc over the averaged span, with margin
    ratio = avg[box].max() / full[box].max()
    print(f"edge source: averaged / unaveraged peak {ratio:.5f}, bound {loss_bound:.5f}; largest difference "
          f"{np.abs(avg - full).max():.4f}")
    assert abs(ratio - 1) < max(loss_bound, 1e-3), (ratio, loss_bound)
    assert np.abs(avg - full).max() < 0.01

"""The basic flagger against a plain numpy implementation of the same rules, and on the
simulator's RFI truth."""

import h5py
import numpy as np

from contimg.flag import flag_basic, flag_stats


def _numpy_reference(vis, flags, autos, threshold, extend):
    out = flags | (vis == 0) | ~np.isfinite(vis)
    out[:, autos] = True
    cross = ~autos
    a = np.where(out[:, cross], np.nan, np.abs(vis[:, cross])).transpose(1, 3, 0, 2)  # (b, p, t, c)
    shape = a.shape
    a = a.reshape(shape[0], shape[1], -1)
    med = np.nanmedian(a, axis=-1, keepdims=True)
    sigma = 1.4826 * np.nanmedian(np.abs(a - med), axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        clip = (np.abs(a - med) > threshold * sigma).reshape(shape).transpose(2, 0, 3, 1)
    sub = out[:, cross] | clip
    sub |= (sub.mean(axis=2, keepdims=True) > extend) | (sub.mean(axis=0, keepdims=True) > extend)
    out[:, cross] = sub
    return out


def test_flagger_matches_numpy_reference():
    rng = np.random.default_rng(3)
    ntime, nbl, nchan, npol = 12, 40, 32, 2
    vis = (rng.normal(size=(ntime, nbl, nchan, npol)) + 1j * rng.normal(size=(ntime, nbl, nchan, npol)))
    vis = (vis + 3.0).astype(np.complex64)
    ant1 = np.repeat(np.arange(8), 5)[:nbl]
    ant2 = np.tile(np.arange(5), 8)[:nbl] + 3
    vis[2, 5, 7, 0] = 40  # a spike
    vis[4, 6, :, 1] += 25  # a burst on one baseline
    vis[:, 9, 11, :] += 30  # narrow-band on one baseline
    vis[1, 2, 3, 0] = 0
    vis[1, 2, 4, 1] = np.nan
    flags = np.zeros(vis.shape, bool)
    flags[0, 0, 0, 0] = True
    ours, n_mad = flag_basic(vis=vis, flags=flags, ant1=ant1, ant2=ant2, flag_autocorrelations=True,
                             mad_threshold_sigma=5.0, extend_fraction=0.6)
    ref = _numpy_reference(vis, flags, ant1 == ant2, 5.0, 0.6)
    assert np.array_equal(ours, ref)
    assert ours[2, 5, 7, 0] and ours[4, 6, :, 1].all() and ours[:, 9, 11, :].all()
    assert ours[1, 2, 3, 0] and ours[1, 2, 4, 1] and ours[0, 0, 0, 0]
    assert n_mad > 0


def test_strong_spikes_in_simulated_data_are_flagged(sim_dir):
    """Single-baseline spikes are injected at 20-100 sigma: the MAD clip must catch them."""
    from contimg.io.naming import group_files, scan_folder
    from contimg.io.reader import read_group

    group = group_files(scan_folder(sim_dir), tolerance_s=60)[1]  # the group without the calibrator
    chunk = read_group(group)
    flags, _ = flag_basic(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                          flag_autocorrelations=True, mad_threshold_sigma=6.0, extend_fraction=0.6)
    with h5py.File(sim_dir / "truth.h5") as f:
        mask = f[f"groups/{group.group_id}/rfi_mask"][()]
    cross = chunk.cross
    found = flags[:, cross].any(axis=-1)[mask[:, cross]].mean()
    false = flags[:, cross].any(axis=-1)[~mask[:, cross]].mean()
    assert found > 0.9 and false < 0.01
    stats = flag_stats(flags=flags, ant1=chunk.ant1, ant2=chunk.ant2, n_antennas=chunk.antenna_enu_m.shape[0])
    assert 0 < stats.fraction < 0.2 and np.nanmax(stats.per_antenna) < 0.5

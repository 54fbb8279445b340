"""The flagger against the simulator's RFI truth, and its twins against each other.

One test body runs every implementation of the per-plane search: the numba CPU twin, the device
path's array code on numpy, and (with a CUDA device) the same array code on cupy.
"""


import h5py
import numpy as np
import pytest

from contimg.flag import REASONS, flag_group, flag_stats
from contimg.sim.flagscore import score_flags

IMPLEMENTATIONS = [
    pytest.param(("cpu", False), id="numba"),
    pytest.param(("cpu", True), id="array-code-numpy"),
    pytest.param(("gpu", True), id="array-code-cupy", marks=pytest.mark.gpu),
]


def _read(sim_dir, index):
    from contimg.io.naming import group_files, scan_folder
    from contimg.io.reader import read_group

    group = group_files(scan_folder(sim_dir), tolerance_s=60)[index]
    chunk = read_group(group)
    with h5py.File(sim_dir / "truth.h5") as f:
        tg = f[f"groups/{group.group_id}"]
        amp = tg["rfi_amp_sigma"][()] if "rfi_amp_sigma" in tg else np.zeros(chunk.vis.shape[:3], np.float32)
        has_cal = bool(tg.attrs["has_calibrator"])
    return chunk, amp, has_cal


def _flag(chunk, cfg, impl):
    backend, array_code = impl
    return flag_group(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                      n_antennas=chunk.antenna_enu_m.shape[0],
                      chans_per_subband=chunk.vis.shape[2] // len(chunk.subbands_present), cfg=cfg,
                      backend=backend, array_code=array_code)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_field_group_rfi_found_with_few_false_flags(sim_dir, test_config, impl):
    """Group 1 (no calibrator): narrow-band, burst, drifting carrier and spikes at 5-60 sigma
    and a persistent channel at 1.5 sigma (below one baseline's noise)."""
    chunk, amp, has_cal = _read(sim_dir, 1)
    assert not has_cal and (amp >= 5).any()
    result = _flag(chunk, test_config.flag, impl)
    score = score_flags(flags=result.flags, amp_sigma=amp, cross=chunk.cross)
    assert score.true_positive_rate >= 0.95, score
    assert score.false_flag_rate <= 0.01, score
    assert score.weak_detected >= 0.9, score  # only the baseline-averaged search can see it
    assert result.flags[:, ~chunk.cross].all()  # autocorrelations out of imaging
    assert set(result.stats.reasons) <= set(REASONS) and result.stats.reasons["baseline_average"] > 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_calibrator_group_rfi_found(sim_dir, test_config, impl):
    """Group 0: the same kinds of RFI on a 3 Jy calibrator transit (a few sigma per visibility,
    where RFI in quadrature with the sky hardly changes the amplitude)."""
    chunk, amp, has_cal = _read(sim_dir, 0)
    assert has_cal
    result = _flag(chunk, test_config.flag, impl)
    score = score_flags(flags=result.flags, amp_sigma=amp, cross=chunk.cross)
    assert score.true_positive_rate >= 0.95, score
    assert score.false_flag_rate <= 0.01, score


@pytest.fixture(scope="module")
def bright_transit(tmp_path_factory, test_config):
    """A 3C286 (15 Jy) transit without RFI, at the real channel width (48 channels per subband,
    768 in all; 32 antennas keep it small)."""
    from contimg.sim import simulate

    out = tmp_path_factory.mktemp("transit")
    cfg = test_config.simulate.model_copy(update={"calibrator": "1331+305", "rfi": False, "n_faint_sources": 10,
                                                  "n_antennas": 32, "chans_per_subband": 48})
    simulate(out, n_groups=1, cfg=cfg)
    return out


def test_bright_calibrator_transit_is_not_rfi(bright_transit, test_config):
    """No RFI in the data: at most 1 % flagged (cross-correlations), and no time or channel
    flagged whole. (At the test config's 2.9 MHz channels the same transit is ~10 % flagged:
    its beating with the field's other bright sources changes faster than the background can
    follow — docs/benchmarks/flagging.md.)"""
    chunk, amp, has_cal = _read(bright_transit, 0)
    assert has_cal and not amp.any() and chunk.vis.shape[2] == 768
    result = _flag(chunk, test_config.flag, ("cpu", False))
    stats = result.stats
    assert stats.fraction <= 0.01, stats.reasons
    assert stats.per_time.max() < 0.5 and stats.per_channel.max() < 0.5


@pytest.fixture(scope="module")
def real_width_rfi(tmp_path_factory, test_config):
    """One calibrator group with RFI at the real channel width (768 channels, 32 antennas)."""
    from contimg.sim import simulate

    out = tmp_path_factory.mktemp("realwidth")
    simulate(out, n_groups=1, cfg=test_config.simulate.model_copy(update={"n_antennas": 32, "chans_per_subband": 48}))
    return out


def test_rfi_at_the_real_channel_width(real_width_rfi, test_config):
    chunk, amp, _ = _read(real_width_rfi, 0)
    result = _flag(chunk, test_config.flag, ("cpu", False))
    score = score_flags(flags=result.flags, amp_sigma=amp, cross=chunk.cross)
    assert score.true_positive_rate >= 0.95 and score.false_flag_rate <= 0.01 and score.weak_detected >= 0.9, score


def test_array_code_equals_numba_twin_bit_for_bit(sim_dir, test_config):
    """On the host the device path's array code and the numba twin do the same arithmetic in
    the same order: identical flags and identical reason counts."""
    chunk, _, _ = _read(sim_dir, 1)
    a = _flag(chunk, test_config.flag, ("cpu", False))
    b = _flag(chunk, test_config.flag, ("cpu", True))
    assert np.array_equal(a.flags, b.flags)
    assert a.stats.reasons == b.stats.reasons
    for name in ("per_time_channel", "per_baseline", "per_antenna", "per_channel", "per_time", "fraction"):
        np.testing.assert_array_equal(getattr(a.stats, name), getattr(b.stats, name), err_msg=name)


@pytest.mark.gpu
def test_gpu_flags_equal_cpu_twin(sim_dir, test_config):
    """On a device the prefix sums round differently: the flags must agree on all but 1e-4 of
    the samples."""
    chunk, _, _ = _read(sim_dir, 1)
    a = _flag(chunk, test_config.flag, ("cpu", False))
    b = _flag(chunk, test_config.flag, ("gpu", True))
    assert b.backend == "gpu"
    assert (a.flags != b.flags).mean() <= 1e-4


def test_rules_on_a_small_plane(test_config):
    """Zeros, non-finite values, kept input flags, dead antenna and a mostly flagged time."""
    rng = np.random.default_rng(3)
    ntime, nchan, npol, nant = 16, 32, 2, 6
    a1, a2 = np.triu_indices(nant)
    vis = (rng.normal(size=(ntime, a1.size, nchan, npol)) + 1j * rng.normal(size=(ntime, a1.size, nchan, npol)))
    vis = (vis + 3.0).astype(np.complex64)
    flags = np.zeros(vis.shape, bool)
    flags[0, 1, 0, 0] = True
    vis[2, 3, 4, 0] = 0
    vis[3, 3, 5, 1] = np.nan
    dead = (a1 == 4) | (a2 == 4)
    vis[:, dead & (a1 != a2)] = 0  # antenna 4 sends zeros
    vis[7, a1 != a2, 2:, :] = 50  # a time almost all bad
    cfg = test_config.flag
    res = flag_group(vis=vis, flags=flags, ant1=a1, ant2=a2, n_antennas=nant, chans_per_subband=nchan, cfg=cfg,
                     backend="cpu")
    f = res.flags
    assert f[0, 1, 0, 0] and f[2, 3, 4, 0] and f[3, 3, 5, 1]
    assert f[:, dead].all() and f[7, a1 != a2].all()
    assert res.stats.reasons["input"] == 1 and res.stats.reasons["invalid"] > 0
    assert res.stats.per_antenna[4] == 1.0
    reset = flag_group(vis=vis, flags=flags, ant1=a1, ant2=a2, n_antennas=nant, chans_per_subband=nchan,
                       cfg=cfg.model_copy(update={"keep_input_flags": False}), backend="cpu")
    assert reset.stats.reasons["input"] == 0
    stats = flag_stats(flags=f, ant1=a1, ant2=a2, n_antennas=nant)
    assert np.isnan(stats.per_baseline[a1 == a2]).all() and stats.per_baseline[dead & (a1 != a2)].min() == 1.0


def test_flag_stats_against_numpy():
    """Every statistic of `flag_stats` (one numba pass over the cross-correlations) against numpy
    written out plainly, with autocorrelations among the baselines and antennas in none."""
    from contimg.flag import flag_stats

    rng = np.random.default_rng(4)
    a1, a2 = np.triu_indices(7)
    a1, a2 = a1 + 1, a2 + 1  # antenna numbers 1..7 of 9: 0 and 8 have no data
    flags = rng.random((5, a1.size, 12, 2)) < 0.3
    flags[:, ((a1 == 3) | (a2 == 3)) & (a1 != a2)] = True  # antenna 3 dead on its cross-correlations
    flags[:, (a1 == 3) & (a2 == 3)] = False  # (its autocorrelation counts for nothing)
    cross = a1 != a2
    s = flag_stats(flags=flags, ant1=a1, ant2=a2, n_antennas=9, reasons={"input": 3})
    fx = flags[:, cross]
    np.testing.assert_allclose(s.per_time_channel, fx.mean(axis=(1, 3)), rtol=1e-12)
    np.testing.assert_allclose(s.per_channel, fx.mean(axis=(0, 1, 3)), rtol=1e-12)
    np.testing.assert_allclose(s.per_time, fx.mean(axis=(1, 2, 3)), rtol=1e-12)
    assert s.fraction == pytest.approx(fx.mean(), rel=1e-12)
    per_bl = fx.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(s.per_baseline[cross], per_bl, rtol=1e-12)
    assert np.isnan(s.per_baseline[~cross]).all()
    for ant in range(9):
        mine = ((a1 == ant) | (a2 == ant))[cross]
        if mine.any():
            assert s.per_antenna[ant] == pytest.approx(per_bl[mine].mean(), rel=1e-12)
        else:
            assert np.isnan(s.per_antenna[ant])
    assert s.per_antenna[3] == 1.0 and s.reasons == {"input": 3}

"""The GPU path's array code (`contimg.calibrate.xp`, run on numpy here and on cupy with the
`gpu` marker) against the numba CPU twin, on synthetic data with known gains: one antenna
flagged whole and one left with two baselines (fewer than ``min_baselines``) get no solution,
the others match the truth."""

from __future__ import annotations

import numpy as np
import pytest

from contimg.calibrate import solve_gains, solve_time_gains

NANT, NTIME, NCHAN, NPOL = 12, 6, 10, 2


@pytest.fixture(scope="module")
def synthetic():
    """``kwargs``: the solvers' keyword arguments; ``truth``: the gains the data were made with."""
    rng = np.random.default_rng(7)
    ant1, ant2 = np.triu_indices(NANT)  # with autocorrelations, as the files have them
    nbl = ant1.size
    model = (rng.standard_normal((NTIME, nbl, NCHAN)) + 1j * rng.standard_normal((NTIME, nbl, NCHAN)) + 3.0)
    bp = (1 + 0.1 * rng.standard_normal((NANT, NCHAN, NPOL))) * np.exp(1j * rng.uniform(-np.pi, np.pi, (NANT, NCHAN, NPOL)))
    gt = np.exp(1j * np.radians(5) * rng.standard_normal((NTIME, NANT, NPOL))) * (1 + 0.05 * rng.standard_normal((NTIME, NANT, NPOL)))
    g = bp[None] * gt[:, :, None, :]  # (t, a, c, p)
    vis = g[:, ant1] * np.conj(g[:, ant2]) * model[..., None]
    vis += 0.05 * (rng.standard_normal(vis.shape) + 1j * rng.standard_normal(vis.shape))
    flags = rng.random(vis.shape) < 0.05
    flags[:, ant1 == 3] = True  # antenna 3 flagged whole on one side of its baselines ...
    flags[:, ant2 == 3] = True  # ... and the other: no solution
    few = ((ant1 == 5) | (ant2 == 5)) & ~np.isin(ant1 + ant2, [5, 16])  # antenna 5 keeps (0, 5) and (5, 11) only:
    flags[:, few] = True  # fewer than min_baselines (4), so no solution either
    kwargs = dict(vis=vis.astype(np.complex64), model=model.astype(np.complex64), flags=flags, ant1=ant1, ant2=ant2,
                  antenna_names=np.array([str(a) for a in range(NANT)]), refants=["0", "1"],
                  baseline_m=np.abs(ant2 - ant1) * 100.0, min_baseline_m=150.0, tolerance=1e-9)
    return {"kwargs": kwargs, "truth": {"bandpass": bp, "time_gains": gt}}


@pytest.fixture(scope="module")
def problem(synthetic):
    return synthetic["kwargs"]


def _compare(a, b, *, ant_axis=0):
    nums_a, g_a, f_a, snr_a, ref_a, _ = a
    nums_b, g_b, f_b, snr_b, ref_b, _ = b
    assert np.array_equal(nums_a, nums_b) and ref_a == ref_b
    assert np.array_equal(f_a, f_b)
    f_a = np.moveaxis(f_a, ant_axis, 0)
    dead = np.isin(np.arange(NANT), [3, 5])
    assert f_a[dead].all() and not f_a[~dead].any()
    assert np.allclose(g_a, g_b, rtol=0, atol=2e-6)
    assert np.allclose(snr_a, snr_b, rtol=1e-4)


def _time_gains(problem, bandpass, calmode, **kw):
    nums, gains, gflags = bandpass[:3]
    return solve_time_gains(**problem, bandpass=gains, bandpass_flags=gflags, bandpass_antennas=nums,
                            interval=np.arange(NTIME) // 2, calmode=calmode, **kw)


def test_bandpass_array_code_equals_numba_twin(problem):
    _compare(solve_gains(**problem, backend="cpu"), solve_gains(**problem, backend="cpu", array_code=True))


@pytest.mark.parametrize("calmode", ["ap", "p"])
def test_time_gains_array_code_equals_numba_twin(problem, calmode):
    bandpass = solve_gains(**problem, backend="cpu")
    cpu = _time_gains(problem, bandpass, calmode, backend="cpu")
    _compare(cpu, _time_gains(problem, bandpass, calmode, backend="cpu", array_code=True), ant_axis=1)
    assert cpu[1].shape == (NTIME // 2, NANT, NPOL)
    if calmode == "p":
        assert np.allclose(np.abs(cpu[1][~cpu[2]]), 1.0, atol=1e-6)


def test_solutions_recover_the_gains(synthetic):
    """Bandpass x per-integration time gains against the gains the data were made with (noise
    0.05 against a model of amplitude ~3: errors well under 1 %)."""
    problem, truth = synthetic["kwargs"], synthetic["truth"]
    nums, bp, bpf, *_ = solve_gains(**problem)
    _, tg, tgf, *_ = solve_time_gains(**problem, bandpass=bp, bandpass_flags=bpf, bandpass_antennas=nums,
                                      interval=np.arange(NTIME), calmode="ap")
    true = truth["bandpass"][None] * truth["time_gains"][:, :, None, :]
    true = true * (np.conj(true[:, :1]) / np.abs(true[:, :1]))  # refant "0"
    got = bp[None] * tg[:, :, None, :]
    ok = ~(bpf[None] | tgf[:, :, None, :])
    assert ok[:, ~np.isin(np.arange(NANT), [3, 5])].all()
    ratio = got[ok] / true[ok]
    assert np.sqrt(np.mean((np.abs(ratio) - 1) ** 2)) < 0.01
    assert np.degrees(np.sqrt(np.mean(np.angle(ratio) ** 2))) < 1.0


@pytest.mark.gpu
@pytest.mark.parametrize("calmode", ["ap", "p"])
def test_gpu_solvers_equal_numba_twin(problem, calmode):
    bandpass = solve_gains(**problem, backend="cpu")
    _compare(bandpass, solve_gains(**problem, backend="gpu"))
    _compare(_time_gains(problem, bandpass, calmode, backend="cpu"),
             _time_gains(problem, bandpass, calmode, backend="gpu"), ant_axis=1)


def _model_inputs():
    """A few sources through the beam on part of the real layout: the simulator's sky
    (`contimg.sky.skymodel`), 40 antennas, 3 integrations, 16 channels."""
    from contimg.sky.geometry import hadec_to_icrs
    from contimg.sky.skymodel import PointSources
    from contimg.sky.telescope import active_station_numbers, stations

    enu = stations().enu_m[active_station_numbers(40)]
    a1, a2 = np.triu_indices(40, 1)
    time_jd = 2461121.9 + np.arange(3) * 12.88 / 86400
    dec = np.radians(30.5)
    ra0, dec0 = hadec_to_icrs(ha_rad=0.0, dec_rad=dec, time_jd=float(time_jd.mean()))
    rng = np.random.default_rng(3)
    src = PointSources(np.array(["a", "b", "c"]), ra0 + np.radians(rng.uniform(-1, 1, 3)),
                       dec0 + np.radians(rng.uniform(-1, 1, 3)), np.array([15.0, 1.0, 0.2]),
                       np.array([-0.7, 0.0, -1.0]), 1.4e9)
    return dict(sources=src, time_jd=time_jd, freq_hz=1.311e9 + np.arange(16) * 11.7e6,
                b_enu_m=enu[a2] - enu[a1], pointing_dec_rad=dec)


def test_predict_array_code_equals_numba_twin():
    """The direct sum as array code (phases exponentiated per channel) against the numba twin
    (phase advanced by a complex multiply per channel): equal to float32 rounding."""
    from contimg.sky.skymodel import sky_visibilities

    kw = _model_inputs()
    cpu = sky_visibilities(**kw)
    arr = sky_visibilities(**kw, xp=np)
    assert cpu.shape == arr.shape == (3, 780, 16) and arr.dtype == np.complex64
    assert np.abs(arr - cpu).max() < 2e-6 * np.abs(cpu).max()


@pytest.mark.gpu
def test_gpu_predict_equals_numba_twin():
    import cupy

    from contimg.sky.skymodel import sky_visibilities

    kw = _model_inputs()
    cpu = sky_visibilities(**kw)
    gpu = sky_visibilities(**kw, xp=cupy).get()
    assert np.abs(gpu - cpu).max() < 2e-6 * np.abs(cpu).max()


def test_compact_model_gives_the_same_solution(problem):
    """A model of the solved baselines only (``calibrator_model(compact=True)``) gives the
    solution of the full model, bit for bit, on both paths."""
    sel = (problem["ant1"] != problem["ant2"]) & (problem["baseline_m"] >= problem["min_baseline_m"])
    compact = {**problem, "model": np.ascontiguousarray(problem["model"][:, sel])}
    for array_code in (False, True):
        full = solve_gains(**problem, array_code=array_code)
        small = solve_gains(**compact, array_code=array_code)
        for a, b in zip(full[1:4], small[1:4]):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="baselines"):
        solve_gains(**{**problem, "model": problem["model"][:, :5]})

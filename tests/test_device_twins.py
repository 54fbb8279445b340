"""The device path's array code of the host-only steps (apply, subtraction, rephase/Stokes I,
imaging weights, primary beam, restore), run on numpy through `contimg.device.backend.TWIN`
(numpy standing in for cupy, so the code takes its device branch), against the numba/scipy CPU
twins on a small synthetic group (DSA-110 antennas, flags, uneven weights). The `gpu`-marked
test runs the same bodies on cupy."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from contimg.device.backend import TWIN, to_host
from contimg.io.chunk import VisChunk

NANT, NTIME, NCHAN, NPOL = 16, 5, 24, 2


def small_chunk(seed: int = 5) -> VisChunk:
    """16 DSA-110 antennas (autos included), 5 integrations of 12.9 s, 24 channels, XX/YY;
    ~5 % of samples flagged, weights 0.5–1.5 with ~2 % zero."""
    from contimg.sky.telescope import active_station_numbers, stations

    rng = np.random.default_rng(seed)
    st = stations()
    ants = active_station_numbers(NANT)
    a1, a2 = np.triu_indices(NANT)
    a1, a2 = ants[a1], ants[a2]
    shape = (NTIME, a1.size, NCHAN, NPOL)
    vis = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape) + 2.0).astype(np.complex64)
    weights = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    weights[rng.random(shape) < 0.02] = 0.0
    time_jd = 2461121.9 + np.arange(NTIME) * 12.884902 / 86400
    freq = 1.311e9 + np.arange(NCHAN) * 2.0e6
    b = st.enu_m[a2] - st.enu_m[a1]
    return VisChunk(group_id="2026-03-19T09:36:00", vis=vis, flags=rng.random(shape) < 0.05, weights=weights,
                    uvw_m=np.broadcast_to(b[None], (NTIME, a1.size, 3)).copy(), time_jd=time_jd, freq_hz=freq,
                    ant1=a1, ant2=a2, antenna_names=st.names, antenna_enu_m=st.enu_m, pols=np.array([-5, -6]),
                    pointing_dec_rad=np.radians(40.0), int_time_s=12.884902, chan_width_hz=2.0e6,
                    subbands_present=np.ones(1, bool))


def _gains(rng, nant, nchan):
    g = ((1 + 0.1 * rng.standard_normal((nant, nchan, NPOL)))
         * np.exp(1j * rng.uniform(-np.pi, np.pi, (nant, nchan, NPOL)))).astype(np.complex64)
    gf = rng.random(g.shape) < 0.05
    gf[2] = True  # an antenna flagged whole
    g[gf] = 0
    return g, gf


def _apply_case(chunk, rng, time_gains: bool):
    ants = np.unique(np.concatenate([chunk.ant1, chunk.ant2]))
    nums = ants[ants != ants[-1]]  # the last antenna has no solution: its baselines get flagged
    g, gf = _gains(rng, nums.size, NCHAN)
    kw = dict(ant1=chunk.ant1, ant2=chunk.ant2, antenna_numbers=nums, gains=g, gain_flags=gf)
    if time_gains:
        tg = (np.exp(1j * rng.uniform(-1, 1, (NTIME, nums.size, NPOL)))
              * (1 + 0.05 * rng.standard_normal((NTIME, nums.size, NPOL)))).astype(np.complex64)
        tgf = rng.random(tg.shape) < 0.05
        tg[tgf] = 0
        kw.update(time_gains=tg, time_gain_flags=tgf)
    return kw


@pytest.mark.parametrize("time_gains", [False, True])
def test_apply_array_code_equals_numba_twin(time_gains):
    """Flags equal; visibilities equal to complex64 rounding (1e-6 of their largest)."""
    _check_apply(TWIN, time_gains)


def _check_apply(xp, time_gains):
    from contimg.calibrate.apply import apply_gains

    chunk = small_chunk()
    kw = _apply_case(chunk, np.random.default_rng(11), time_gains)
    v_cpu, f_cpu = chunk.vis.copy(), chunk.flags.copy()
    apply_gains(vis=v_cpu, flags=f_cpu, **kw)
    v_dev, f_dev = xp.asarray(chunk.vis.copy()), xp.asarray(chunk.flags.copy())
    apply_gains(vis=v_dev, flags=f_dev, xp=xp, **kw)
    v_dev, f_dev = to_host(v_dev), to_host(f_dev)
    assert f_cpu.sum() > chunk.flags.sum()  # the flagged/missing gains flagged their baselines
    np.testing.assert_array_equal(f_dev, f_cpu)
    assert np.abs(v_dev - v_cpu).max() <= 1e-6 * np.abs(v_cpu).max()


def _on(chunk: VisChunk, xp) -> VisChunk:
    out = copy.copy(chunk)
    out.vis, out.flags, out.weights = xp.asarray(chunk.vis), xp.asarray(chunk.flags), xp.asarray(chunk.weights)
    return out


@pytest.mark.parametrize("average", [1, 4])
def test_rephase_array_code_equals_numba_twin(average):
    _check_rephase(TWIN, average=average)


def test_rephase_averages_channels_in_the_same_pass_as_average_channels_does():
    """The CPU kernel's channel averaging (no full-resolution array) against rephasing at full
    resolution, then `average_channels` (tested against a plain loop in test_memory.py); a
    factor that does not divide the channels is refused."""
    from contimg.imaging.prep import average_channels, rephase_stokes_i

    chunk = small_chunk()
    ra, dec = 1.2, np.radians(40.3)
    uvw1, vis1, wgt1 = rephase_stokes_i(chunk=chunk, ra_rad=ra, dec_rad=dec)
    want_vis, want_wgt, _ = average_channels(vis=vis1, wgt=wgt1, freq_hz=chunk.freq_hz, factor=4)
    uvw4, vis4, wgt4 = rephase_stokes_i(chunk=chunk, ra_rad=ra, dec_rad=dec, average=4)
    np.testing.assert_array_equal(uvw4, uvw1)
    assert vis4.shape == wgt4.shape == (vis1.shape[0], NCHAN // 4)
    np.testing.assert_array_equal(wgt4 == 0, want_wgt == 0)
    assert np.any(want_wgt == 0) and np.any((wgt1 == 0).reshape(-1, NCHAN // 4, 4).any(axis=2) & (want_wgt > 0))
    np.testing.assert_allclose(wgt4, want_wgt, rtol=1e-6, atol=0)
    assert np.abs(vis4 - want_vis).max() <= 1e-6 * np.abs(want_vis).max()
    with pytest.raises(ValueError, match=f"group {chunk.group_id}: .* does not divide its 24 channels"):
        rephase_stokes_i(chunk=chunk, ra_rad=ra, dec_rad=dec, average=5)


def _check_rephase(xp, average: int = 1):
    """uvw identical (the same host geometry); weights equal to float32 rounding, zero at the
    same samples; visibilities to 1e-6 of their largest (float64 phases, complex128 sums);
    ``average`` channels averaged (the device: rephase, then `average_channels`; the CPU: in the
    kernel)."""
    from contimg.imaging.prep import rephase_stokes_i

    chunk = small_chunk()
    ra, dec = 1.2, np.radians(40.3)
    uvw_c, vis_c, wgt_c = rephase_stokes_i(chunk=chunk, ra_rad=ra, dec_rad=dec, average=average)
    uvw_d, vis_d, wgt_d = rephase_stokes_i(chunk=_on(chunk, xp), ra_rad=ra, dec_rad=dec, xp=xp, average=average)
    vis_d, wgt_d = to_host(vis_d), to_host(wgt_d)
    ncross = int(chunk.cross.sum())
    assert vis_d.shape == vis_c.shape == (NTIME * ncross, NCHAN // average) and vis_d.dtype == np.complex64
    assert wgt_d.dtype == np.float32
    np.testing.assert_array_equal(uvw_d, uvw_c)
    np.testing.assert_array_equal(wgt_d == 0, wgt_c == 0)
    assert 0.05 < np.mean(wgt_c == 0) < 0.3 if average == 1 else 0 < np.mean(wgt_c == 0) < 0.05
    np.testing.assert_allclose(wgt_d, wgt_c, rtol=1e-6, atol=0)
    assert np.abs(vis_d - vis_c).max() <= 1e-6 * np.abs(vis_c).max()


WEIGHTINGS = [dict(weighting="natural", robust=0.0, taper_rad=np.radians(60 / 3600), uv_min_lambda=30.0,
                   uv_max_lambda=4000.0),
              dict(weighting="uniform", robust=0.0),
              dict(weighting="briggs", robust=0.0),
              dict(weighting="briggs", robust=-1.0, taper_rad=np.radians(30 / 3600), uv_min_lambda=50.0)]


@pytest.mark.parametrize("kw", WEIGHTINGS, ids=lambda k: k["weighting"] + ("+cuts" if "uv_min_lambda" in k else ""))
def test_imaging_weights_array_code_equals_numba_twin(kw):
    _check_weights(TWIN, kw)


def _check_weights(xp, kw):
    """The same samples weighted and zeroed; weights to 1e-5 relative (float64 density summed in
    another order, Briggs' sum of weights in float32 on both)."""
    from contimg.imaging.prep import rephase_stokes_i
    from contimg.imaging.weights import imaging_weights

    chunk = small_chunk()
    uvw, _, wgt = rephase_stokes_i(chunk=chunk, ra_rad=1.2, dec_rad=np.radians(40.3))
    common = dict(uvw_m=uvw, freq_hz=chunk.freq_hz, npix=256, cell_rad=np.radians(20 / 3600), **kw)
    cpu = imaging_weights(wgt=wgt, **common)
    dev = to_host(imaging_weights(wgt=xp.asarray(wgt), xp=xp, **common))
    assert dev.dtype == np.float32 and dev.shape == cpu.shape
    np.testing.assert_array_equal(dev > 0, cpu > 0)
    assert (cpu == 0).sum() > (wgt == 0).sum()  # the cuts/cell limits zeroed samples too
    np.testing.assert_allclose(dev, cpu, rtol=1e-5, atol=1e-6 * cpu.max())


def _sources_in_beam(chunk):
    from contimg.sky.calibrators import Calibrator
    from contimg.sky.geometry import hadec_to_icrs

    ra0, dec0 = hadec_to_icrs(ha_rad=0.0, dec_rad=chunk.pointing_dec_rad, time_jd=float(chunk.time_jd.mean()))
    return [Calibrator("A", "", ra0 + np.radians(0.6), dec0 - np.radians(0.4), 12.0, -0.7),
            Calibrator("B", "", ra0 - np.radians(1.1), dec0 + np.radians(0.8), 4.0, 0.0)]


def test_subtraction_array_code_equals_numba_twin():
    _check_subtraction(TWIN)


def _check_subtraction(xp):
    """Fitted scales to 1e-6 relative (the data hold 0.8 A + 1.3 B on noise: the fit finds
    them to 1 %), visibilities after subtraction to 2e-6 of their largest (the models'
    array-code prediction against the numba one: float32 rounding); a resumed group's
    `subtract_fitted` equally."""
    from contimg.calibrate.subtract import _source_models, fit_and_subtract, subtract_fitted

    chunk = small_chunk()
    sources = _sources_in_beam(chunk)
    models, cross_idx, _ = _source_models(chunk, sources)
    rng = np.random.default_rng(2)
    chunk.vis[:] = 0.3 * (rng.standard_normal(chunk.vis.shape) + 1j * rng.standard_normal(chunk.vis.shape))
    chunk.vis[:, cross_idx] += (0.8 * models[0] + 1.3 * models[1])[..., None]
    host = copy.deepcopy(chunk)
    cpu = fit_and_subtract(chunk=host, sources=sources, min_baseline_m=50.0)
    dev = copy.deepcopy(chunk)
    dev.to_device(xp)
    got = fit_and_subtract(chunk=dev, sources=sources, min_baseline_m=50.0)
    s_cpu, s_dev = np.array([s.scale for s in cpu]), np.array([s.scale for s in got])
    np.testing.assert_allclose(s_cpu, [0.8, 1.3], rtol=0.01)
    np.testing.assert_allclose(s_dev, s_cpu, rtol=1e-6)
    scale = np.abs(chunk.vis).max()
    assert np.abs(to_host(dev.vis) - host.vis).max() <= 2e-6 * scale
    # a resumed group: the stored scales subtracted again, on both paths
    subtract_fitted(chunk=host, subtracted=cpu)
    subtract_fitted(chunk=dev, subtracted=cpu)
    assert np.abs(to_host(dev.vis) - host.vis).max() <= 4e-6 * scale


def test_primary_beam_array_code_equals_scipy_twin():
    _check_pbeam(TWIN)
    _check_pbeam(np)  # the CPU path: the same array code on numpy


def _check_pbeam(xp):
    """The averaged beam interpolated on ``xp`` against scipy's RegularGridInterpolator of the
    same coarse beam: equal to float32 rounding (1e-6), a beam of peak ~1 falling off across
    the image."""
    from scipy.interpolate import RegularGridInterpolator

    from contimg.imaging.pbeam import average_primary_beam, coarse_primary_beam
    from contimg.sky.geometry import hadec_to_icrs

    chunk = small_chunk()
    rng = np.random.default_rng(4)
    ra, dec = hadec_to_icrs(ha_rad=0.0, dec_rad=chunk.pointing_dec_rad, time_jd=float(chunk.time_jd.mean()))
    kw = dict(npix=300, cell_rad=np.radians(40 / 3600), ra_rad=ra, dec_rad=dec, time_jd=chunk.time_jd,
              freq_hz=chunk.freq_hz, weight_tf=rng.uniform(0.5, 1.0, (NTIME, NCHAN)),
              pointing_dec_rad=chunk.pointing_dec_rad, coarse=40, freq_bins=8)
    nodes, values = coarse_primary_beam(**kw)
    yy, xx = np.mgrid[0:300, 0:300]
    cpu = RegularGridInterpolator((nodes, nodes), values)(np.stack([yy.ravel(), xx.ravel()], axis=-1)).reshape(300, 300)
    dev = to_host(average_primary_beam(**kw, xp=xp))
    assert dev.dtype == np.float32 and dev.shape == cpu.shape == (300, 300)
    assert 0.9 < cpu.max() <= 1.0 and cpu.min() < 0.5
    assert np.abs(dev - cpu).max() <= 1e-6


def test_restore_array_code_equals_scipy_twin():
    _check_restore(TWIN)


def _check_restore(xp):
    """model * Gaussian beam + residual by the FFTs of ``xp`` against scipy's fftconvolve, to
    1e-6 of the peak, on odd and even image sizes."""
    from contimg.imaging.restore import restore

    rng = np.random.default_rng(8)
    for n in (128, 131):
        model = np.zeros((n, n))
        model[rng.integers(10, n - 10, 20), rng.integers(10, n - 10, 20)] = rng.uniform(0.01, 2.0, 20)
        residual = (0.01 * rng.standard_normal((n, n))).astype(np.float32)
        kw = dict(bmaj_rad=np.radians(30 / 3600), bmin_rad=np.radians(18 / 3600), bpa_rad=0.4,
                  cell_rad=np.radians(5 / 3600))
        cpu = restore(model=model, residual=residual, **kw)
        dev = to_host(restore(model=xp.asarray(model), residual=xp.asarray(residual), xp=xp, **kw))
        assert dev.dtype == np.float32 and dev.shape == cpu.shape
        assert np.abs(dev - cpu).max() <= 1e-6 * np.abs(cpu).max()


@pytest.mark.gpu
def test_gpu_host_only_steps_equal_their_cpu_twins():
    """The same bodies on cupy: the chunk's arrays on the device."""
    import cupy

    for time_gains in (False, True):
        _check_apply(cupy, time_gains)
    _check_rephase(cupy)
    _check_rephase(cupy, average=4)
    for kw in WEIGHTINGS:
        _check_weights(cupy, kw)
    _check_subtraction(cupy)
    _check_pbeam(cupy)
    _check_restore(cupy)


def test_chunk_moves_once_and_counts_its_bytes():
    """`VisChunk.to_device` uploads vis, flags (bit-packed: 1/8 of their bytes) and weights once
    (a second call moves nothing), `to_host` brings back the same arrays, each move counted;
    numpy (the CPU) moves and counts nothing; the chunk pickles wherever it is."""
    import pickle

    chunk = small_chunk()
    vis, flags, weights = chunk.vis.copy(), chunk.flags.copy(), chunk.weights.copy()
    chunk.to_device(np)
    assert chunk.transfers.as_dict() == {"h2d": 0, "d2h": 0, "by_label": {}} and not chunk.on_device
    chunk.to_device(TWIN)
    chunk.to_device(TWIN)
    assert chunk.on_device and chunk.location == "twin" and chunk.xp is TWIN
    t = chunk.transfers.as_dict()
    assert t["by_label"] == {"h2d:vis": vis.nbytes, "h2d:flags": -(-flags.size // 8), "h2d:weights": weights.nbytes}
    assert t["h2d"] == vis.nbytes + weights.nbytes + -(-flags.size // 8) and t["d2h"] == 0
    back = pickle.loads(pickle.dumps(chunk))
    assert back.location == "twin" and back.transfers.as_dict() == t
    chunk.to_host()
    assert not chunk.on_device and chunk.transfers.d2h == vis.nbytes + flags.nbytes + weights.nbytes
    np.testing.assert_array_equal(chunk.vis, vis)
    np.testing.assert_array_equal(chunk.flags, flags)
    np.testing.assert_array_equal(chunk.weights, weights)
    chunk.check()


def _check_host_empty(xp) -> np.ndarray:
    from contimg.device.backend import host_empty

    a = host_empty((3, 1000), np.complex64, xp=xp)
    assert isinstance(a, np.ndarray) and a.shape == (3, 1000) and a.dtype == np.complex64
    return a


def test_a_host_buffer_for_the_twin_is_plain_numpy():
    """The twin and numpy get plain numpy arrays (np.empty: huge pages for a large one)."""
    for xp in (np, TWIN):
        assert _check_host_empty(xp).base is None


@pytest.mark.gpu
def test_a_host_buffer_for_a_device_is_pinned():
    """For cupy the read's visibilities are page-locked: the CUDA runtime calls the pointer host
    memory (cudaMemoryTypeHost, 1), which the copy engine reads without a staging copy."""
    import cupy

    a = _check_host_empty(cupy)
    assert cupy.cuda.runtime.pointerGetAttributes(a.ctypes.data).type == 1


def test_host_primary_beam_and_pbcor_against_scipy_and_numpy():
    """The host's numba beam interpolation (`bilinear_host`) against scipy's
    RegularGridInterpolator on an odd-sized image, and `pb_corrected` against numpy's where."""
    from scipy.interpolate import RegularGridInterpolator

    from contimg.imaging.pbeam import bilinear_host, pb_corrected

    rng = np.random.default_rng(8)
    nodes = np.linspace(0, 300, 23)
    values = rng.uniform(0, 1, (23, 23))
    yy, xx = np.mgrid[0:301, 0:301]
    ref = RegularGridInterpolator((nodes, nodes), values)(np.stack([yy.ravel(), xx.ravel()], -1)).reshape(301, 301)
    got = bilinear_host(grid=nodes, values=values, npix=301)
    assert got.dtype == np.float32 and np.abs(got - ref).max() <= 1e-6
    image = rng.normal(size=(301, 301)).astype(np.float32)
    pb = got.copy()
    pb[0, :5] = [0.0, -0.1, 0.2, 0.19999, np.nan]
    expect = np.where(pb >= 0.2, image / np.where(pb > 0, pb, 1), np.nan).astype(np.float32)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(pb_corrected(image=image, pb=pb, cutoff=0.2), expect)

"""Gridding against a direct DFT, the PSF and beam fit, weights against numpy."""

import numpy as np
import pytest

from contimg.sky.geometry import C_M_S
from contimg.imaging.grid import dirty_image, psf_image
from contimg.imaging.restore import fit_beam, gaussian_kernel
from contimg.imaging.weights import imaging_weights


@pytest.fixture(scope="module")
def small_obs():
    rng = np.random.default_rng(7)
    nrow = 600
    uvw = np.stack([rng.normal(0, 400, nrow), rng.normal(0, 400, nrow), rng.normal(0, 60, nrow)], axis=1)
    freq = np.array([1.32e9, 1.41e9, 1.49e9])
    return uvw, freq


def _dft_vis(uvw, freq, lm_flux):
    vis = np.zeros((uvw.shape[0], freq.size), np.complex128)
    for l, m, s in lm_flux:
        n = np.sqrt(1 - l * l - m * m)
        k = freq[None, :] / C_M_S
        vis += s * np.exp(2j * np.pi * k * (uvw[:, :1] * l + uvw[:, 1:2] * m + uvw[:, 2:3] * (n - 1)))
    return vis


@pytest.mark.parametrize("epsilon", [1e-4, 1e-5])
def test_dirty_image_equals_direct_dft(small_obs, epsilon):
    uvw, freq = small_obs
    npix, cell = 64, np.radians(20 / 3600)
    sources = [(6 * cell, -3 * cell, 1.0), (-20.3 * cell, 11.7 * cell, 0.4)]
    vis = _dft_vis(uvw, freq, sources).astype(np.complex64)
    wgt = np.random.default_rng(1).uniform(0.5, 1.5, vis.shape).astype(np.float32)
    img = dirty_image(uvw_m=uvw, freq_hz=freq, vis=vis, wgt=wgt, npix=npix, cell_rad=cell, epsilon=epsilon)
    # direct DFT in the documented FITS order: x -> l = -(x - n/2) cell, y -> m = (y - n/2) cell
    yy, xx = np.mgrid[0:npix, 0:npix]
    l, m = -(xx - npix / 2) * cell, (yy - npix / 2) * cell
    n = np.sqrt(1 - l**2 - m**2)
    ref = np.zeros((npix, npix))
    for c, f in enumerate(freq):
        k = f / C_M_S
        ph = -2j * np.pi * k * (np.multiply.outer(l, uvw[:, 0]) + np.multiply.outer(m, uvw[:, 1])
                                + np.multiply.outer(n - 1, uvw[:, 2]))
        ref += np.real(np.exp(ph) @ (wgt[:, c] * vis[:, c].astype(np.complex128)))
    ref /= wgt.sum()
    assert np.max(np.abs(img - ref)) / np.max(np.abs(ref)) < 3 * epsilon
    # the brightest source lands on its pixel, with its flux
    y, x = np.unravel_index(np.argmax(img), img.shape)
    assert (x, y) == (npix // 2 - 6, npix // 2 - 3)  # east (+l) is to the left, north (+m) up
    assert img.max() == pytest.approx(1.0, abs=0.05)


def test_psf_peaks_at_one_in_the_centre(small_obs):
    uvw, freq = small_obs
    wgt = np.ones((uvw.shape[0], freq.size), np.float32)
    psf = psf_image(uvw_m=uvw, freq_hz=freq, wgt=wgt, npix=64, cell_rad=np.radians(20 / 3600), epsilon=1e-5)
    assert np.unravel_index(np.argmax(psf), psf.shape) == (32, 32)
    assert psf.max() == pytest.approx(1.0, abs=1e-4)


def test_fit_beam_recovers_a_known_gaussian():
    cell = np.radians(5 / 3600)
    truth = (np.radians(40 / 3600), np.radians(22 / 3600), np.radians(35.0))
    psf = gaussian_kernel(shape=(128, 128), bmaj_rad=truth[0], bmin_rad=truth[1], bpa_rad=truth[2], cell_rad=cell)
    bmaj, bmin, bpa = fit_beam(psf=psf, cell_rad=cell)
    assert bmaj == pytest.approx(truth[0], rel=1e-3) and bmin == pytest.approx(truth[1], rel=1e-3)
    assert bpa == pytest.approx(truth[2], abs=1e-3)


def test_uniform_weights_flatten_the_gridded_density(small_obs):
    uvw, freq = small_obs
    npix, cell = 64, np.radians(20 / 3600)
    wgt = np.ones((uvw.shape[0], freq.size), np.float32)
    w = imaging_weights(uvw_m=uvw, freq_hz=freq, wgt=wgt, weighting="uniform", robust=0.0, npix=npix, cell_rad=cell)
    du = 1 / (npix * cell)
    u = (uvw[:, :1] * freq / C_M_S / du).ravel()
    v = (uvw[:, 1:2] * freq / C_M_S / du).ravel()
    iu, iv = np.floor(u + 0.5).astype(int), np.floor(v + 0.5).astype(int)
    cells = {}
    for a, b, x in zip(iu, iv, w.ravel()):
        for key in ((a, b), (-a, -b)):
            cells[key] = cells.get(key, 0.0) + x
    inside = [abs(a) < npix // 2 and abs(b) < npix // 2 for a, b in cells]
    vals = np.array([val for val, ok in zip(cells.values(), inside) if ok])
    assert np.allclose(vals, 1.0, atol=1e-5)  # every occupied cell (and its conjugate) sums to 1
    # Briggs: robust -2 is uniform up to a scale, robust +2 nearly natural
    r_lo = imaging_weights(uvw_m=uvw, freq_hz=freq, wgt=wgt, weighting="briggs", robust=-2.0, npix=npix, cell_rad=cell)
    r_hi = imaging_weights(uvw_m=uvw, freq_hz=freq, wgt=wgt, weighting="briggs", robust=2.0, npix=npix, cell_rad=cell)
    assert np.corrcoef(r_lo.ravel(), w.ravel())[0, 1] > 0.99
    kept = w > 0  # outside the image's uv extent (|u| >= 1 / (2 cell)) nothing is kept
    assert np.array_equal(r_hi > 0, kept) and np.ptp(r_hi[kept]) / r_hi[kept].mean() < 0.1


def test_gaussian_taper_and_uv_range():
    """uv points drawn from a circular Gaussian of width sigma_uv: the natural-weighted PSF is a
    Gaussian of FWHM theta_0 = sqrt(8 ln 2) / (2 pi sigma_uv); a taper of FWHM theta_t makes it
    sqrt(theta_0^2 + theta_t^2) (a Gaussian times a Gaussian). A uv range keeps exactly the
    samples inside it."""
    from contimg.imaging.grid import psf_image
    from contimg.imaging.weights import imaging_weights

    rng = np.random.default_rng(4)
    freq = np.array([C_M_S])  # 1 m wavelength: uv in metres = wavelengths
    sigma_uv = 300.0
    n = 40000
    uvw = np.zeros((n, 3))
    uvw[:, :2] = rng.normal(0, sigma_uv, (n, 2))
    wgt = np.ones((n, 1), np.float32)
    cell, npix = np.radians(10 / 3600), 256
    theta0 = np.sqrt(8 * np.log(2)) / (2 * np.pi * sigma_uv)
    theta_t = np.radians(60 / 3600)
    fwhm = {}
    for name, taper in (("plain", 0.0), ("tapered", theta_t)):
        w = imaging_weights(uvw_m=uvw, freq_hz=freq, wgt=wgt, weighting="natural", robust=0.0, npix=npix,
                            cell_rad=cell, taper_rad=taper)
        psf = psf_image(uvw_m=uvw, freq_hz=freq, wgt=w, npix=npix, cell_rad=cell, epsilon=1e-6)
        bmaj, bmin, _ = fit_beam(psf=psf, cell_rad=cell)
        fwhm[name] = np.sqrt(bmaj * bmin)
    assert fwhm["plain"] == pytest.approx(theta0, rel=0.02)
    assert fwhm["tapered"] == pytest.approx(np.hypot(theta0, theta_t), rel=0.02)
    r = np.hypot(uvw[:, 0], uvw[:, 1])
    w = imaging_weights(uvw_m=uvw, freq_hz=freq, wgt=wgt, weighting="briggs", robust=0.5, npix=npix, cell_rad=cell,
                        uv_min_lambda=100.0, uv_max_lambda=500.0)
    assert np.array_equal(w[:, 0] > 0, (r >= 100.0) & (r <= 500.0))


def test_rephasing_equals_pyuvdata_phase(sim_dir, test_config):
    """The imager's rephasing (drift scan at HA 0 to the ICRS meridian position of mid-time,
    per integration) against pyuvdata's ``phase()`` of the same group: uvw and Stokes I."""
    from contimg.sky.geometry import hadec_to_icrs
    from contimg.interop.ms import chunk_to_uvdata
    from contimg.imaging.prep import rephase_stokes_i
    from contimg.io.naming import group_files, scan_folder
    from contimg.io.reader import read_group

    group = group_files(scan_folder(sim_dir), tolerance_s=test_config.grouping.group_tolerance_s)[1]
    chunk = read_group(group)
    chunk.flags[:] = False
    ra, dec = hadec_to_icrs(ha_rad=0.0, dec_rad=chunk.pointing_dec_rad, time_jd=float(np.mean(chunk.time_jd)))
    uvw, vis, wgt = rephase_stokes_i(chunk=chunk, ra_rad=ra, dec_rad=dec)
    uv = chunk_to_uvdata(chunk)
    uv.phase(ra=ra, dec=dec, epoch="J2000", cat_name="meridian_midtime", cat_type="sidereal")
    ntime, nbl = chunk.time_jd.size, chunk.ant1.size
    cross = chunk.cross
    ref_uvw = uv.uvw_array.reshape(ntime, nbl, 3)[:, cross].reshape(-1, 3)
    ref_vis = uv.data_array.reshape(ntime, nbl, -1, 2)[:, cross].mean(axis=-1).reshape(vis.shape)
    phase = np.angle(vis * np.conj(ref_vis))
    print(f"uvw max difference {np.max(np.abs(uvw - ref_uvw)) * 1e3:.3f} mm, phase max difference "
          f"{np.degrees(np.max(np.abs(phase[np.abs(ref_vis) > 0]))):.4f} deg")
    # 2 mm on baselines up to 2.6 km: under 1e-6 of the baseline (0.2" on the sky; a cell is 3");
    # the frames differ at that level (pyuvdata's apparent coordinates from erfa, ours from astropy)
    assert np.max(np.abs(uvw - ref_uvw)) < 2e-3
    assert np.max(np.abs(phase[np.abs(ref_vis) > 0])) < np.radians(0.01)
    np.testing.assert_allclose(np.abs(vis), np.abs(ref_vis), rtol=1e-5, atol=1e-6)

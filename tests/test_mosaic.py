"""The mosaic's science on synthetic images with analytic truth (fast; the simulator-based strip
tests are in test_mosaic_strip.py).

- Resampling: point sources (Gaussian beams sampled as the strip tests' images are, ~4 pixels
  across the minor axis) on one SIN grid, resampled onto another SIN grid centred 1.3 deg away
  at a fractional pixel offset; the expected image is the analytic Gaussian evaluated at each
  output pixel's sky position (astropy's WCS). Bicubic keeps every peak within 0.5 %, bilinear
  loses more (the module's choice of order). The same resampling equals reproject's
  (`reproject_interp`, an independent implementation of the same interpolation) to 3e-4 of the
  peak, with the same pixels covered; its B-spline prefilter equals scipy's.
- Linear mosaicking: three overlapping images of one sky of point sources, each the sky times
  its own (Gaussian) primary beam plus beam-correlated noise of its own RMS; the mosaic's
  fluxes are the truth within 3 sigma of the analytic noise 1/sqrt(sum B²/sigma²), and its
  residual's measured RMS in the overlaps is that analytic noise within 10 %.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import mad_std
from astropy.wcs import WCS
from scipy import ndimage

from contimg.io.fits import image_header
from contimg.mosaic import Mosaic, add_image, add_placed, empty_mosaic, place, prepare_image, strip_header
from contimg.mosaic.resample import pixel_lattice, spline_coefficients

CELL = np.radians(12.0 / 3600)
FWHM_MAJ, FWHM_MIN = np.radians(100.0 / 3600), np.radians(50.0 / 3600)
DEC0 = np.radians(31.5)


def _wcs(npix: int, ra_rad: float, dec_rad: float) -> WCS:
    return WCS(image_header(npix=npix, cell_rad=CELL, ra_rad=ra_rad, dec_rad=dec_rad, freq_hz=1.4e9,
                            bandwidth_hz=1.0, time_start_jd=2461000.5, time_mid_jd=2461000.5, bunit="Jy/beam",
                            beam_rad=None)).celestial


def _gaussians(wcs: WCS, shape, ra_deg, dec_deg, amp) -> np.ndarray:
    """Point sources as elliptical Gaussians (PA 0: major axis north), evaluated at each pixel's
    sky position through ``wcs`` (offsets on the tangent plane of each source)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    ra, dec = wcs.pixel_to_world_values(xx, yy)
    ra, dec = np.radians(ra), np.radians(dec)
    out = np.zeros(shape)
    s_maj, s_min = FWHM_MAJ / 2.3548200450309493, FWHM_MIN / 2.3548200450309493
    for r0, d0, a in zip(np.radians(ra_deg), np.radians(dec_deg), amp):
        east = np.cos(dec) * np.sin(ra - r0)
        north = np.sin(dec) * np.cos(d0) - np.cos(dec) * np.sin(d0) * np.cos(ra - r0)
        out += a * np.exp(-0.5 * ((east / s_min) ** 2 + (north / s_maj) ** 2))
    return out


def _field_and_grid(*, n: int, n_src: int, half_deg: float, dec_offset_px: float, seed: int):
    """An n² field at RA 180 deg with ``n_src`` sources within ``half_deg`` of its centre, and
    the grid of a neighbouring strip centred 1.3 deg east, ``dec_offset_px`` pixels off in Dec:
    (input WCS, source RA and Dec (deg), output WCS, output shape, rng)."""
    w_in = _wcs(n, np.radians(180.0), DEC0)
    rng = np.random.default_rng(seed)
    ra = 180.0 + rng.uniform(-half_deg, half_deg, n_src) / np.cos(DEC0)
    dec = np.degrees(DEC0) + rng.uniform(-half_deg, half_deg, n_src)
    h = strip_header(ra_rad=np.radians(180.0 + 1.3 / np.cos(DEC0)), dec_rad=DEC0 + dec_offset_px * CELL,
                     width_rad=3.6 * np.pi / 180, height_rad=n * CELL, cell_rad=CELL, freq_hz=1.4e9,
                     bandwidth_hz=1.0, time_start_jd=2461000.5, time_mid_jd=2461000.5, beam_rad=None)
    return w_in, ra, dec, WCS(h).celestial, (h["NAXIS2"], h["NAXIS1"]), rng


def test_bicubic_resampling_keeps_point_source_peaks():
    n = 256
    w_in, ra, dec, w_out, shape, _ = _field_and_grid(n=n, n_src=12, half_deg=0.3, dec_offset_px=0.37, seed=3)
    amp = np.ones(12)
    image = _gaussians(w_in, (n, n), ra, dec, amp)
    expected = _gaussians(w_out, shape, ra, dec, amp)
    x, y = w_out.world_to_pixel_values(ra, dec)
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    errors = {}
    for order in ("bilinear", "bicubic"):
        got = _resample(image, w_in, w_out, shape, order)
        # the peak of each source: the largest value in a 5x5 box, against the analytic one there
        peak = np.array([np.nanmax(got[j - 2:j + 3, i - 2:i + 3]) for i, j in zip(ix, iy)])
        truth = np.array([expected[j - 2:j + 3, i - 2:i + 3].max() for i, j in zip(ix, iy)])
        errors[order] = np.abs(peak / truth - 1)
    assert errors["bicubic"].max() < 0.005, errors["bicubic"]
    assert errors["bilinear"].max() > 2 * errors["bicubic"].max()


def _resample(image, w_in, w_out, shape, order):
    """``image`` resampled onto ``w_out`` by the mosaic's own path: one image of unit beam and
    unit noise added to an empty mosaic is the resampled image (NaN where it does not reach)."""
    lx, ly, step, err = pixel_lattice(wcs_in=w_in, wcs_out=w_out, box=(0, shape[0], 0, shape[1]))
    assert step > 1 and err <= 0.001  # the lattice is used, and the mapping's error is what it says
    mosaic = empty_mosaic(shape=shape, names=("image",))
    add_image(mosaic, image=prepare_image(planes={"image": image}, pb=np.ones(image.shape, np.float32), noise_jy=1.0,
                                          wcs=w_in, order=order), wcs_out=w_out, pb_cutoff=0.5)
    return mosaic.plane("image")


@pytest.mark.parametrize("shape", [(1, 5), (2, 3), (7, 9), (45, 40), (300, 257)])
def test_spline_coefficients_equal_scipy(shape):
    """The B-spline prefilter (numba, all cores) is scipy's ``spline_filter`` (mirror) to float32
    rounding, down to lines shorter than the causal filter's start."""
    image = np.random.default_rng(shape[0]).normal(size=shape).astype(np.float32)
    expected = ndimage.spline_filter(image.astype(np.float64), order=3, mode="mirror")
    got = spline_coefficients(image, order="bicubic")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-6 * np.abs(expected).max())
    np.testing.assert_array_equal(spline_coefficients(image, order="bilinear"), image)


def test_resampling_equals_reproject():
    from reproject import reproject_interp

    n = 256
    w_in, ra, dec, w_out, shape, rng = _field_and_grid(n=n, n_src=20, half_deg=0.4, dec_offset_px=-0.21, seed=5)
    image = _gaussians(w_in, (n, n), ra, dec, rng.uniform(0.2, 1.0, 20)) + rng.normal(0, 0.01, (n, n))
    for order in ("bicubic", "bilinear"):
        ref, _ = reproject_interp((image, w_in), w_out, shape_out=shape, order=order, roundtrip_coords=False)
        got = _resample(image, w_in, w_out, shape, order)
        covered = np.isfinite(ref)
        assert covered.sum() > 50000 and np.array_equal(covered, np.isfinite(got)), order
        assert np.abs(got - ref)[covered].max() < 3e-4 * np.abs(image).max(), order


def _correlated_noise(rng, shape, sigma):
    """Gaussian noise smoothed by the beam (as an image's noise is) and scaled to RMS ``sigma``."""
    s = np.array([FWHM_MAJ, FWHM_MIN]) / 2.3548200450309493 / CELL / np.sqrt(2)
    raw = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=s)
    return sigma * raw / raw.std()


def test_linear_mosaic_fluxes_and_noise_match_the_analytic_combination():
    from reproject import reproject_interp

    n, step_deg, fwhm_pb_deg = 560, 0.8, 1.2  # images reach below the 0.2 cutoff of their beams
    rng = np.random.default_rng(11)
    centres = [np.radians(180.0 + k * step_deg / np.cos(DEC0)) for k in range(3)]
    sigmas = [1.0e-3, 1.5e-3, 0.8e-3]
    n_src = 15
    ra = 180.0 + rng.uniform(-0.3, 2 * step_deg + 0.3, n_src) / np.cos(DEC0)
    dec = np.degrees(DEC0) + rng.uniform(-0.5, 0.5, n_src)
    flux = rng.uniform(0.05, 0.3, n_src)

    def beam(wcs, shape, ra_c):
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
        r, d = (np.radians(v) for v in wcs.pixel_to_world_values(xx, yy))
        cos_t = np.sin(d) * np.sin(DEC0) + np.cos(d) * np.cos(DEC0) * np.cos(r - ra_c)
        theta = np.arccos(np.clip(cos_t, -1, 1))
        return np.exp(-4 * np.log(2) * (theta / np.radians(fwhm_pb_deg)) ** 2)

    h = strip_header(ra_rad=centres[1], dec_rad=DEC0, width_rad=np.radians(2 * step_deg + 2.0),
                     height_rad=np.radians(1.4), cell_rad=CELL, freq_hz=1.4e9, bandwidth_hz=1.0,
                     time_start_jd=2461000.5, time_mid_jd=2461000.5, beam_rad=(FWHM_MAJ, FWHM_MIN, 0.0))
    w_out = WCS(h).celestial
    shape = (h["NAXIS2"], h["NAXIS1"])
    mosaic = empty_mosaic(shape=shape)
    pieces = empty_mosaic(shape=shape)
    ref_num, ref_weight, ref_count = np.zeros(shape), np.zeros(shape), np.zeros(shape, int)
    for ra_c, sigma in zip(centres, sigmas):
        w_in = _wcs(n, ra_c, DEC0)
        pb = beam(w_in, (n, n), ra_c)
        # the apparent sky: each source's flux times the beam at its position
        src_pb = np.exp(-4 * np.log(2) * (np.array([
            np.arccos(np.clip(np.sin(np.radians(d)) * np.sin(DEC0) + np.cos(np.radians(d)) * np.cos(DEC0)
                              * np.cos(np.radians(r) - ra_c), -1, 1)) for r, d in zip(ra, dec)])
            / np.radians(fwhm_pb_deg)) ** 2)
        sky = _gaussians(w_in, (n, n), ra, dec, flux * src_pb)
        noise = _correlated_noise(rng, (n, n), sigma)
        image = prepare_image(planes={"image": sky + noise, "residual": noise}, pb=pb, noise_jy=sigma, wcs=w_in)
        add_image(mosaic, image=image, wcs_out=w_out, pb_cutoff=0.2)
        # the same added 37 columns at a time (as a stored mosaic is updated, chunk by chunk)
        placement = place(image, wcs_out=w_out, shape_out=shape)
        y0, y1, x0, x1 = placement.box
        for c0 in range(x0, x1, 37):
            rows, cols = slice(y0, y1), slice(c0, min(c0 + 37, x1))
            add_placed(Mosaic(names=pieces.names, planes=pieces.planes[:, rows, cols], weight=pieces.weight[rows, cols],
                              pb_weight=pieces.pb_weight[rows, cols], noise=pieces.noise[rows, cols],
                              count=pieces.count[rows, cols]), image=image, placement=placement, pb_cutoff=0.2,
                       at=(y0, c0))
        # the same sums from reproject's resampling and the module's formula written out
        img_out, _ = reproject_interp((sky + noise, w_in), w_out, shape_out=shape, order="bicubic")
        pb_out, _ = reproject_interp((pb, w_in), w_out, shape_out=shape, order="bilinear")
        use = np.isfinite(img_out) & (np.nan_to_num(pb_out) >= 0.2)
        ref_num += np.where(use, np.nan_to_num(pb_out * img_out) / sigma**2, 0)
        ref_weight += np.where(use, np.nan_to_num(pb_out) ** 2 / sigma**2, 0)
        ref_count += use
    for a, b in ((pieces.planes, mosaic.planes), (pieces.weight, mosaic.weight), (pieces.noise, mosaic.noise),
                 (pieces.pb_weight, mosaic.pb_weight), (pieces.count, mosaic.count)):
        np.testing.assert_array_equal(a, b)
    # where the same images contribute (the 0.2 cutoff's edge may differ by interpolation), equal
    same = mosaic.count == ref_count
    assert same.mean() > 0.999
    weight = np.nan_to_num(mosaic.weight)
    for got, ref, tol in ((np.nan_to_num(mosaic.plane("image")) * weight, ref_num, 5e-4), (weight, ref_weight, 2e-5)):
        assert np.abs(got - ref)[same].max() <= tol * np.abs(ref).max()
    assert np.array_equal(np.isnan(mosaic.noise), mosaic.count == 0)
    np.testing.assert_allclose(mosaic.noise[same & (ref_count > 0)], 1 / np.sqrt(ref_weight[same & (ref_count > 0)]),
                               rtol=2e-5)
    planes = {"restored": mosaic.plane("image"), "residual": mosaic.plane("residual"), "noise": mosaic.noise}
    # the analytic noise: 1 / sqrt(sum_i B_i² / sigma_i²) with the analytic beams on the mosaic grid
    weight = sum(np.where(beam(w_out, shape, c) >= 0.2, beam(w_out, shape, c) ** 2, 0.0) / s**2
                 for c, s in zip(centres, sigmas))
    analytic = np.where(weight > 0, 1 / np.sqrt(np.where(weight > 0, weight, 1)), np.nan)
    overlap = (mosaic.count >= 2) & np.isfinite(planes["residual"])
    assert overlap.sum() > 10000
    for lo, hi in ((1.0, 1.3), (1.3, 2.0), (2.0, 6.0)):  # noise bands (in units of the best noise)
        band = overlap & (analytic >= lo * np.nanmin(analytic)) & (analytic < hi * np.nanmin(analytic))
        ratio = mad_std(planes["residual"][band] / analytic[band])
        assert abs(ratio - 1) < 0.1, (lo, hi, ratio)
    x, y = w_out.world_to_pixel_values(ra, dec)
    sky_out = _gaussians(w_out, shape, ra, dec, flux)
    checked = 0
    for k in range(n_src):
        i, j = int(round(float(x[k]))), int(round(float(y[k])))
        if not (2 <= i < shape[1] - 2 and 2 <= j < shape[0] - 2) or not np.isfinite(analytic[j, i]):
            continue
        expected = sky_out[j, i]  # the primary-beam-corrected sky at the source's nearest pixel
        got = planes["restored"][j, i]
        assert abs(got - expected) < max(0.02 * expected, 3 * analytic[j, i]), (k, got, expected)
        checked += 1
    assert checked >= 10
    # the noise map is the analytic noise (but along the cutoff's edge, where interpolation decides)
    both = np.isfinite(planes["noise"]) & np.isfinite(analytic)
    close = np.abs(planes["noise"][both] / analytic[both] - 1) < 0.01
    assert close.mean() > 0.99


def test_running_spans_close_once_no_group_reaches_them(tmp_path):
    """The service's running mosaics (`update_running_mosaic`), fed small synthetic groups 5
    minutes apart across 08:00 UTC: the 08:00 span's store is made by the 07:00 span's last
    groups (before it has a row), the 07:00 span stays running while groups of the next span
    still reach its grid and completes at the first that does not, with FITS equal to its final
    planes; every group is in the span of its mid-time."""
    from astropy.io import fits as afits

    from contimg.config import load_config
    from contimg.io.store import read_zarr
    from contimg.pipeline.groupimage import GroupImage
    from contimg.pipeline.mosaic import mosaic_paths, update_running_mosaic
    from contimg.qa.sources import image_wcs
    from contimg.sky.geometry import hadec_to_icrs
    from contimg.state.mosaics import MosaicsDB

    cfg = load_config("test", use_env=False)
    n, cell, dec_app = 96, np.radians(90.0 / 3600), np.radians(40.0)  # 2.4 deg images
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:n, 0:n]
    pb = np.exp(-4 * np.log(2) * (np.hypot(xx - n / 2, yy - n / 2) * cell / np.radians(2.5)) ** 2).astype(np.float32)
    (tmp_path / "state").mkdir()
    seen = []
    for k in range(8):
        mid_jd = 2461121.5 + (7 * 60 + 47.5 + 5 * k) / 1440  # 07:47:30 ... 08:22:30 UTC
        ra, dec = hadec_to_icrs(ha_rad=0.0, dec_rad=dec_app, time_jd=mid_jd)
        noise = rng.normal(0, 1e-3, (n, n)).astype(np.float32)
        img = GroupImage(group_id=f"g{k}", restored=noise + 0.1 * pb, residual=noise, pb=pb, noise_jy=1e-3,
                         wcs=image_wcs(npix=n, cell_rad=cell, ra_rad=ra, dec_rad=dec), beam_rad=(3 * cell, 3 * cell, 0.0),
                         cell_rad=cell, freq_hz=1.4e9, bandwidth_hz=1e8, ra_rad=ra, dec_rad=dec,
                         time_start_jd=mid_jd - 2.5 / 1440, time_mid_jd=mid_jd)
        update_running_mosaic(tmp_path, img.group_id, cfg=cfg, image=img)
        db = MosaicsDB(tmp_path / "state" / "products.sqlite3")
        try:
            seen.append({r["name"]: (r["status"], list(r["groups"])) for r in db.list(kind="span")})
        finally:
            db.close()
        assert any(img.group_id in g for _, g in seen[-1].values())
    first, second = "span_20260322T0700_1h", "span_20260322T0800_1h"
    # the 08:00 store exists before its row: made by a 07:00 group that reaches it
    assert mosaic_paths(tmp_path, second)["zarr"].is_dir() and second not in seen[1]
    made_by = read_zarr(mosaic_paths(tmp_path, second)["zarr"], ())[1]["groups"][0]
    assert made_by in seen[-1][first][1]
    statuses = [s[first][0] for s in seen]
    closed_at = statuses.index("complete")
    assert statuses[:closed_at] == ["running"] * closed_at and set(statuses[closed_at:]) == {"complete"}
    groups_first = seen[-1][first][1]
    assert f"g{closed_at - 1}" in groups_first and f"g{closed_at}" not in groups_first  # it closed at the first miss
    assert any(g in seen[-1][second][1] for g in groups_first)  # the groups at the hour went into both
    row_paths = mosaic_paths(tmp_path, first)
    planes = read_zarr(row_paths["zarr"], ("image",))[0]
    np.testing.assert_array_equal(afits.getdata(row_paths["image"])[0, 0], planes["image"])


SEARCH_CELL = np.radians(20.0 / 3600)  # the source-search tests' mosaics: 20" pixels, a 4 x 3 pixel beam
SEARCH_BEAM = (4 * SEARCH_CELL, 3 * SEARCH_CELL, 0.0)


def _search_header(nx: int):
    """A strip mosaic's header, 64 rows by ``nx`` columns of `SEARCH_CELL`, beam `SEARCH_BEAM`."""
    h = strip_header(ra_rad=np.radians(180.0), dec_rad=DEC0, width_rad=nx * SEARCH_CELL, height_rad=64 * SEARCH_CELL,
                     cell_rad=SEARCH_CELL, freq_hz=1.4e9, bandwidth_hz=1e8, time_start_jd=2461000.5,
                     time_mid_jd=2461000.52, beam_rad=SEARCH_BEAM)
    h["MJD-AVG"] = 61000.02
    return h


def _search_config(**catalogue):
    """The test configuration without the external and sky catalogues, ``catalogue`` settings changed."""
    from contimg.config import load_config

    cfg = load_config("test", use_env=False)
    return cfg.model_copy(update={"catalogue": cfg.catalogue.model_copy(update={"external": "", **catalogue}),
                                  "sky": cfg.sky.model_copy(update={"catalogue": ""})})


def test_mosaic_source_search_in_column_blocks_equals_the_whole(tmp_path, monkeypatch):
    """A span's closing search reads its mosaic in blocks of columns (memory bounded whatever
    the span's length). On a synthetic 64 × 700 mosaic with 40 sources (several on the blocks'
    boundaries) searched in blocks of 128 columns (+ 24 beside them), the recorded detections and
    forced measurements equal `find_sources` and `forced_at` run on the whole planes: the same
    brightest ``max_sources`` islands, positions (to 1e-7 deg, 0.02 % of a pixel), fluxes and
    noise, in the same order."""
    from contimg.io.store import write_zarr
    from contimg.pipeline import catalogue as catmod
    from contimg.qa.photometry import forced_at
    from contimg.qa.sources import find_sources
    from contimg.state.catalogue import CatalogueDB

    cell, beam = SEARCH_CELL, SEARCH_BEAM
    h = _search_header(700)
    ny, nx = h["NAXIS2"], h["NAXIS1"]
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.uniform(10, nx - 10, 32), [127.6, 128.4, 255.5, 383.0, 384.2, 511.7, 512.5, 640.1]])
    ys = rng.uniform(8, ny - 8, xs.size)
    amp = rng.uniform(0.02, 1.0, xs.size)
    yy, xx = np.mgrid[0:ny, 0:nx]
    s_maj, s_min = 4 / 2.3548, 3 / 2.3548
    image = rng.normal(0, 1e-3, (ny, nx))
    for x0, y0, a in zip(xs, ys, amp):
        image += a * np.exp(-0.5 * (((xx - x0) / s_min) ** 2 + ((yy - y0) / s_maj) ** 2))
    noise = np.full((ny, nx), 1e-3, np.float32)
    pb_weight = np.ones((ny, nx), np.float32)
    pb_weight[:, :6] = np.nan  # uncovered columns at the east end, as a span's first chunk has
    name = "span_test"
    write_zarr(tmp_path / "mosaics" / name / f"{name}.zarr",
               arrays={"image": image.astype(np.float32), "noise": noise, "pb_weight": pb_weight},
               attrs={"header": h.tostring(), "groups": []})
    (tmp_path / "state").mkdir()
    cfg = _search_config(max_sources=25)
    monkeypatch.setattr(catmod, "MOSAIC_BLOCK_X", 128)
    monkeypatch.setattr(catmod, "MOSAIC_MARGIN_X", 24)
    out = catmod.update_catalogue_from_mosaic(tmp_path, name, cfg=cfg)

    wcs = WCS(h).celestial
    pb = (np.nan_to_num(pb_weight) >= cfg.catalogue.min_pb).astype(np.float32)
    rms = np.where(pb > 0, noise, np.float32(np.nan))
    whole = find_sources(restored=image.astype(np.float32), rms=rms, pb=pb, wcs=wcs, beam_rad=beam, cell_rad=cell,
                         threshold_sigma=cfg.catalogue.detect_sigma, min_pb=cfg.catalogue.min_pb, max_sources=25)
    db = CatalogueDB(tmp_path / "state" / "products.sqlite3")
    try:
        dets = db.detections(image=name)
        sources = db.sources()
        forced = {r["source"]: r for r in db.forced_in(name)}
    finally:
        db.close()
    assert out["n_detections"] == len(dets) == whole["x"].size == 25
    dets.sort(key=lambda d: d["n"])
    # (the fits start from the same pixels in shifted coordinates: equal to ~1e-5 of a pixel)
    np.testing.assert_allclose([d["ra_deg"] for d in dets], whole["ra_deg"], rtol=0, atol=1e-7)
    np.testing.assert_allclose([d["dec_deg"] for d in dets], whole["dec_deg"], rtol=0, atol=1e-7)
    np.testing.assert_allclose([d["peak_jy"] for d in dets], whole["peak_jy"], rtol=1e-6)
    assert any(min(abs(x - b) for b in (128, 256, 384, 512, 640)) < 1.0 for x in whole["x"])  # boundaries tested
    ref = forced_at(restored=image.astype(np.float32), rms=rms, pb=pb, wcs=wcs, beam_rad=beam, cell_rad=cell,
                    ra_deg=np.array([s["ra_deg"] for s in sources]), dec_deg=np.array([s["dec_deg"] for s in sources]),
                    min_pb=0.5, systematic_fraction=cfg.catalogue.systematic_fraction)
    assert out["n_forced"] == len(forced) == len(ref) == 25
    for m in ref:
        got = forced[sources[m["index"]]["name"]]
        np.testing.assert_allclose([got[k] for k in ("x", "y", "flux_jy", "noise_jy")],
                                   [m[k] for k in ("x", "y", "flux_jy", "noise_jy")], rtol=1e-6, atol=1e-6)


def test_a_source_fitted_beyond_the_mosaic_edge_keeps_its_noise_and_position(tmp_path):
    """A source centred just outside a mosaic's coverage (its island the covered pixels beside
    it, its fit 1.4 pixels beyond) is catalogued at its true position with the noise of the
    pixel where it was found: the noise was read at the fitted position (NaN outside the
    coverage), the source got a NaN position (stored as NULL) and every later catalogue update
    failed on it ("catalogue and mosaic update failed" in the service log)."""
    from contimg.io.store import write_zarr
    from contimg.pipeline import catalogue as catmod
    from contimg.state.catalogue import CatalogueDB

    h = _search_header(200)
    ny, nx = h["NAXIS2"], h["NAXIS1"]
    truth = [(101.4, 32.3, 0.5), (50.2, 20.7, 0.3)]  # (x, y, Jy/beam): the first beyond the edge
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = np.random.default_rng(2).normal(0, 1e-3, (ny, nx))
    for x0, y0, a in truth:
        image += a * np.exp(-0.5 * (((xx - x0) / (3 / 2.3548)) ** 2 + ((yy - y0) / (4 / 2.3548)) ** 2))
    pb_weight = np.ones((ny, nx), np.float32)
    pb_weight[:, 101:] = np.nan  # the coverage ends between columns 100 and 101
    arrays = {"image": image.astype(np.float32), "noise": np.full((ny, nx), 1e-3, np.float32), "pb_weight": pb_weight}
    for name in ("span_a", "span_b"):  # the second update is the one that failed
        write_zarr(tmp_path / "mosaics" / name / f"{name}.zarr", arrays=arrays,
                   attrs={"header": h.tostring(), "groups": []})
    (tmp_path / "state").mkdir()
    cfg = _search_config()
    first = catmod.update_catalogue_from_mosaic(tmp_path, "span_a", cfg=cfg)
    second = catmod.update_catalogue_from_mosaic(tmp_path, "span_b", cfg=cfg)
    db = CatalogueDB(tmp_path / "state" / "products.sqlite3")
    try:
        dets = db.detections(image="span_a")
        sources = db.sources()
    finally:
        db.close()
    assert first["n_detections"] == 2 and second["n_forced"] == 1  # (forced only where covered)
    wcs = WCS(h).celestial
    for x0, y0, _ in truth:
        ra, dec = wcs.pixel_to_world_values(x0, y0)
        near = [s for s in sources if s["ra_deg"] is not None
                and abs(s["ra_deg"] - ra) * np.cos(np.radians(dec)) < 0.1 * 20 / 3600 and abs(s["dec_deg"] - dec) < 0.1 * 20 / 3600]
        assert len(near) == 1, (x0, y0, sources)
    assert all(d["rms_jy"] == pytest.approx(1e-3) and np.isfinite(d["snr"]) for d in dets)

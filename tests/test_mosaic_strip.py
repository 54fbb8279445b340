"""A strip of three simulated groups (one fixed sky drifting through the beam, a variable source
and a transient, `contimg simulate` in strip mode) run through the pipeline (`run_batch`), then
through the service's after-group hook (`contimg.pipeline.mosaic.after_group`: the catalogue,
forced photometry, transient search and running span mosaic, group by group) and
`build_mosaic` over all three; everything is checked against the simulator's truth file.

The images are 1152² at 14" with baselines to 2500 wavelengths (a ~100" x 50" beam, ~4 pixels
across its minor axis) so the whole primary beam down to 0.2 is imaged cheaply; 6 integrations of
51.5 s span a group's full 5 minutes of drift.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS

from contimg.imaging.measure import fit_point_source
from contimg.io.store import read_zarr
from contimg.qa.sources import rms_map

GROUPS = 3
STRIP = {
    "simulate": {"n_times": 6, "int_time_s": 4 * 12.884902, "sky_mode": "strip", "strip_sources_per_deg2": 1.0,
                 "faint_flux_jy": [0.02, 0.3], "rfi": False, "variable_flux_jy": [0.1, 0.3, 0.1],
                 "transient_flux_jy": 0.15, "transient_group": 2},
    "image": {"npix": 1152, "cell_arcsec": 14.0, "uv_max_lambda": 2500.0, "niter": 5000,
              "products": ["restored", "residual", "pbcor"]},
}


@pytest.fixture(scope="module")
def strip(tmp_path_factory):
    from contimg.config import load_config
    from contimg.pipeline.mosaic import build_mosaic
    from contimg.service.batch import run_batch
    from contimg.sim import simulate

    base = tmp_path_factory.mktemp("strip")
    # the simulated sky's catalogue.csv as the external catalogue the new sources are matched with
    cfg = load_config("test", use_env=False,
                      overrides={**STRIP, "catalogue": {"external": str(base / "in" / "catalogue.csv")}})
    simulate(base / "in", n_groups=GROUPS, cfg=cfg.simulate)
    results, code = run_batch(base / "in", root=base / "root", cfg=cfg)  # the service runs after_group per group
    assert code == 0
    with sqlite3.connect(base / "root" / "state" / "products.sqlite3") as db:  # the alerts the service sent
        alerts = [{"severity": r[0], "category": r[1], "message": r[2]}
                  for r in db.execute("SELECT severity, category, message FROM alerts ORDER BY id")]
        ran = {r[0] for r in db.execute("SELECT DISTINCT image FROM forced_photometry WHERE kind = 'group'")}
    assert ran == {r.group_id for r in results}  # the hook ran for every group, inside the service
    hooks = [{"alerts": alerts}]
    mosaic = build_mosaic(base / "root", cfg=cfg, name="all")
    with h5py.File(base / "in" / "truth.h5") as f:
        s = f["sources"]
        truth = {k: s[k][()] for k in ("ra_rad", "dec_rad", "flux_jy", "spectral_index", "group")}
        truth["name"] = np.array([n.decode() for n in s["name"][()]])
        truth["ref_freq_hz"] = float(s.attrs["ref_freq_hz"])
        truth["variable"] = f["variable/flux_jy"][()]
        truth["transient"] = f["transient/flux_jy"][()]
    return {"root": base / "root", "cfg": cfg, "groups": [r.group_id for r in results], "hooks": hooks,
            "mosaic": mosaic, "truth": truth}


def _mosaic_planes(row):
    with fits.open(row["image_path"]) as h:
        image, header = h[0].data[0, 0], h[0].header
    noise = fits.getdata(row["noise_path"])[0, 0]
    pbw = fits.getdata(row["weight_path"])[0, 0]
    residual = fits.getdata(row["image_path"].replace(".image.fits", ".residual.fits"))[0, 0]
    return image, noise, pbw, residual, header


def _truth_in_mosaic(strip, header, noise, pbw, *, min_snr=10.0):
    """Fixed-flux truth sources (not the variable or the transient) where the mosaic's pb
    weight is >= 0.2 and the truth flux is above ``min_snr`` x the mosaic's noise: their
    (index, x, y, flux at the mosaic's frequency)."""
    t = strip["truth"]
    wcs = WCS(header).celestial
    x, y = (np.asarray(v) for v in wcs.world_to_pixel_values(np.degrees(t["ra_rad"]), np.degrees(t["dec_rad"])))
    flux = t["flux_jy"] * (header["CRVAL3"] / t["ref_freq_hz"]) ** t["spectral_index"]
    out = []
    for i in range(x.size):
        ix, iy = int(round(float(x[i]))), int(round(float(y[i])))
        if t["group"][i] < -1 or not (8 <= ix < noise.shape[1] - 8 and 8 <= iy < noise.shape[0] - 8):
            continue
        if pbw[iy, ix] >= 0.2 and flux[i] > min_snr * noise[iy, ix]:
            out.append((i, float(x[i]), float(y[i]), float(flux[i])))
    return out


def test_strip_truth_file_has_one_fixed_sky_a_variable_and_a_transient(strip):
    t = strip["truth"]
    assert set(np.unique(t["group"])) <= {-3, -2, -1, 0}  # one sky for all groups
    assert (t["group"] == 0).sum() > 30
    assert list(t["variable"]) == STRIP["simulate"]["variable_flux_jy"]
    assert t["transient"][2] == STRIP["simulate"]["transient_flux_jy"] and not t["transient"][[0, 1]].any()


def test_mosaic_fluxes_and_positions_match_the_truth(strip):
    """Every fixed source above 10 sigma where the pb weight >= 0.2: positions within 0.1 beam;
    fluxes within 2 % or 3 sigma of the local noise (the robust RMS of the mosaic's residual
    around it) for at least 95 % of them, and within 5 % or 5 sigma for all. (The single
    images' own errors set the tail: tests/test_imaging_truth.py holds the imaging to the same
    figures.)"""
    image, noise, pbw, residual, header = _mosaic_planes(strip["mosaic"])
    local = rms_map(residual=residual, tile=64)
    beam = tuple(np.radians(header[k]) for k in ("BMAJ", "BMIN", "BPA"))
    cell = np.radians(abs(header["CDELT1"]))
    beam_size = np.sqrt(beam[0] * beam[1])
    checked = _truth_in_mosaic(strip, header, noise, pbw)
    assert len(checked) >= 20
    good = 0
    for i, x, y, flux in checked:
        fit = fit_point_source(image=image, x0=x, y0=y, beam_rad=beam, cell_rad=cell)
        assert np.hypot(fit.x - x, fit.y - y) * cell / beam_size < 0.1, strip["truth"]["name"][i]
        sigma = local[int(round(y)), int(round(x))]
        good += abs(fit.flux - flux) <= max(0.02 * flux, 3 * sigma)
        assert abs(fit.flux - flux) <= max(0.05 * flux, 5 * sigma), strip["truth"]["name"][i]
    assert good >= 0.95 * len(checked), (good, len(checked))


def test_mosaic_is_the_inverse_variance_combination_of_the_images(strip):
    """At each checked source, the mosaic's fitted flux equals the combination of the single
    images' own fits (their pbcor FITS, astropy's WCS) with weights B² / sigma² to 0.5 % (or a
    fifth of the mosaic's noise): the resampling and weighting lose nothing. Sources where an
    image's beam is within 0.03 of the cutoff are left out (there each pixel of the fit decides
    alone whether that image counts)."""
    root = strip["root"]
    image, noise, pbw, _, header = _mosaic_planes(strip["mosaic"])
    beam = tuple(np.radians(header[k]) for k in ("BMAJ", "BMIN", "BPA"))
    cell = np.radians(abs(header["CDELT1"]))
    t = strip["truth"]
    singles = []
    for gid in strip["groups"]:
        stem = root / "products" / gid / gid
        with fits.open(f"{stem}.restored.fits") as h:
            restored, hdr = h[0].data[0, 0], h[0].header
        residual = fits.getdata(f"{stem}.residual.fits")[0, 0]
        pb = read_zarr(root / "products" / gid / "image.zarr")[0]["pb"]  # the averaged beam the imager made
        singles.append((restored, pb, WCS(hdr).celestial, float(mad_std(residual)),
                        tuple(np.radians(hdr[k]) for k in ("BMAJ", "BMIN", "BPA"))))
    n_checked = 0
    for i, x, y, _ in _truth_in_mosaic(strip, header, noise, pbw, min_snr=30.0):
        num = den = 0.0
        for restored, pb_map, wcs, sigma, b in singles:
            xi, yi = (float(v) for v in wcs.world_to_pixel_values(np.degrees(t["ra_rad"][i]), np.degrees(t["dec_rad"][i])))
            ix, iy = int(round(xi)), int(round(yi))
            if not (8 <= ix < restored.shape[1] - 8 and 8 <= iy < restored.shape[0] - 8):
                continue
            pb = float(pb_map[iy, ix])
            if abs(pb - strip["cfg"].mosaic.pb_cutoff) < 0.03:
                break
            if not pb >= strip["cfg"].mosaic.pb_cutoff:
                continue
            cell_i = np.radians(abs(wcs.wcs.cdelt[0]))
            a = fit_point_source(image=restored, x0=xi, y0=yi, beam_rad=b, cell_rad=cell_i).flux / pb
            num += a * pb**2 / sigma**2
            den += pb**2 / sigma**2
        else:
            n_checked += 1
            assert den > 0
            got = fit_point_source(image=image, x0=x, y0=y, beam_rad=beam, cell_rad=cell).flux
            sigma_m = noise[int(round(y)), int(round(x))]
            assert abs(got - num / den) < max(0.005 * abs(num / den), 0.2 * sigma_m), (t["name"][i], got, num / den)
    assert n_checked >= 10


def test_noise_in_the_overlaps_is_the_inverse_variance_expectation(strip):
    """The residual mosaic's robust RMS over the pixels two or more images cover, in units of
    the noise map (1/sqrt(sum B²/sigma²) from the single images' measured noise), is 1 within
    10 % in each band of primary-beam weight."""
    root = strip["root"]
    _, noise, pbw, residual, _ = _mosaic_planes(strip["mosaic"])
    count = read_zarr(root / "mosaics" / "all" / "all.zarr", ("count",))[0]["count"]
    overlap = (count >= 2) & np.isfinite(residual)
    assert overlap.sum() > 100000
    for lo, hi in ((0.2, 0.5), (0.5, 0.8), (0.8, 1.2), (1.2, 2.0)):
        band = overlap & (pbw >= lo) & (pbw < hi)
        assert band.sum() > 10000
        assert abs(mad_std(residual[band] / noise[band]) - 1) < 0.1, (lo, hi)


def test_span_mosaics_rows_and_products(strip):
    """The after-group hook kept one running mosaic per span: rows in the products DB naming
    their groups, the Zarr planes, a closed span marked complete with FITS (a full WCS) equal
    to its planes."""
    from contimg.pipeline.mosaic import span_of
    from contimg.state.mosaics import MosaicsDB

    db = MosaicsDB(strip["root"] / "state" / "products.sqlite3")
    try:
        rows = {r["name"]: r for r in db.list()}
    finally:
        db.close()
    assert rows["all"]["kind"] == "custom" and rows["all"]["groups"] == strip["groups"]
    spans = [r for r in rows.values() if r["kind"] == "span"]
    assert spans and all(set(r["groups"]) <= set(strip["groups"]) for r in spans)
    # every span is still running: the last group's image (4.5 deg wide) reaches back into the
    # previous span's grid, and a span completes only when a group no longer reaches it (the
    # hour-long test below sees one complete)
    assert len(spans) == 2 and all(r["status"] == "running" for r in spans)
    last_group = strip["groups"][-1]
    assert all(last_group in r["groups"] for r in spans)
    # every group is in the span of its mid-time
    from contimg.state.products import ProductsDB

    products = ProductsDB(strip["root"] / "state" / "products.sqlite3")
    try:
        mids = {g["group_id"]: g["mid_mjd"] for g in products.groups()}
    finally:
        products.close()
    for gid, mid in mids.items():
        _, start, end = span_of(mid, strip["cfg"].mosaic.span_hours)
        assert any(r["start_mjd"] == pytest.approx(start) and gid in r["groups"] for r in spans)
    for row in spans:
        planes, attrs = read_zarr(row["zarr_path"])
        assert sorted(attrs["groups"]) == row["groups"]
        if row["status"] != "complete":  # a running span: its planes in the Zarr, its FITS at completion
            assert row["image_path"] == ""
            continue
        with fits.open(row["image_path"]) as h:
            hdr = h[0].header
            data = h[0].data[0, 0]
        assert hdr["CTYPE1"] == "RA---SIN" and hdr["BUNIT"] == "Jy/beam" and hdr["BMAJ"] > 0
        assert hdr["NIMAGES"] == len(row["groups"])
        np.testing.assert_array_equal(planes["image"], data)


def _counterpart(strip, name, sources):
    t = strip["truth"]
    i = list(t["name"]).index(name)
    ra, dec = np.degrees(t["ra_rad"][i]), np.degrees(t["dec_rad"][i])
    seps = [np.hypot((s["ra_deg"] - ra) * np.cos(np.radians(dec)), s["dec_deg"] - dec) * 3600 for s in sources]
    k = int(np.argmin(seps))
    return sources[k], seps[k]


def test_catalogue_holds_every_injected_source_above_10_sigma(strip):
    """Every truth source whose apparent flux exceeds 10 x an image's noise where that image's
    beam is >= 0.2 is in the catalogue, its refined position within 0.1 beam."""
    from contimg.pipeline.groupimage import load_group_image
    from contimg.state.catalogue import CatalogueDB

    db = CatalogueDB(strip["root"] / "state" / "products.sqlite3")
    try:
        sources = db.sources()
    finally:
        db.close()
    t = strip["truth"]
    detectable = set()
    for gid in strip["groups"]:
        img = load_group_image(strip["root"], gid)
        beam_arcsec = np.degrees(np.sqrt(img.beam_rad[0] * img.beam_rad[1])) * 3600
        x, y = img.wcs.world_to_pixel_values(np.degrees(t["ra_rad"]), np.degrees(t["dec_rad"]))
        for i in range(t["name"].size):
            ix, iy = int(round(float(x[i]))), int(round(float(y[i])))
            if not (0 <= ix < img.pb.shape[1] and 0 <= iy < img.pb.shape[0]) or img.pb[iy, ix] < 0.2:
                continue
            flux = max(t["flux_jy"][i], t["variable"].max() if t["group"][i] == -2 else 0,
                       t["transient"].max() if t["group"][i] == -3 else 0)
            if flux * img.pb[iy, ix] > 10 * img.noise_jy:
                detectable.add(str(t["name"][i]))
    assert len(detectable) >= 20
    for name in detectable:
        src, sep = _counterpart(strip, name, sources)
        assert sep < 0.1 * beam_arcsec, (name, sep)
        assert src["external_name"] == name  # cross-matched with the external catalogue
        assert src["n_detections"] >= 1 and src["first_seen_mjd"] <= src["last_seen_mjd"]
        assert src["pos_err_arcsec"] < 0.1 * beam_arcsec and src["maj_arcsec"] >= src["min_arcsec"] > 0


def test_forced_photometry_of_every_catalogue_source_in_every_image(strip):
    """Each group image has a forced measurement of exactly the catalogue sources inside its
    primary-beam cutoff (the beam read back from its image.zarr at the source's pixel), and the
    fixed sources' measurements agree with the truth within 5 % or 4 sigma."""
    from contimg.pipeline.groupimage import load_group_image
    from contimg.state.catalogue import CatalogueDB

    cut = strip["cfg"].catalogue.min_pb
    db = CatalogueDB(strip["root"] / "state" / "products.sqlite3")
    try:
        sources = db.sources()
        forced = {gid: {r["source"]: r for r in db.forced_in(gid)} for gid in strip["groups"]}
    finally:
        db.close()
    t = strip["truth"]
    n_checked = 0
    for gid in strip["groups"]:
        img = load_group_image(strip["root"], gid)
        beam_arcsec = np.degrees(np.sqrt(img.beam_rad[0] * img.beam_rad[1])) * 3600
        x, y = img.wcs.world_to_pixel_values([s["ra_deg"] for s in sources], [s["dec_deg"] for s in sources])
        inside = set()
        for s, xi, yi in zip(sources, x, y):
            ix, iy = int(round(float(xi))), int(round(float(yi)))
            if 8 <= ix < img.pb.shape[1] - 8 and 8 <= iy < img.pb.shape[0] - 8 and img.pb[iy, ix] >= cut:
                inside.add(s["name"])
        assert set(forced[gid]) == inside, gid
        for name, row in forced[gid].items():
            src = next(s for s in sources if s["name"] == name)
            sep = np.hypot((np.degrees(t["ra_rad"]) - src["ra_deg"]) * np.cos(np.radians(src["dec_deg"])),
                           np.degrees(t["dec_rad"]) - src["dec_deg"]) * 3600
            ti = int(np.argmin(sep))
            if t["group"][ti] < -1 or sep[ti] > 0.2 * beam_arcsec:  # the variable, the transient, an artefact
                continue
            flux = t["flux_jy"][ti] * (img.freq_hz / t["ref_freq_hz"]) ** t["spectral_index"][ti]
            if flux * row["pb"] < 20 * img.noise_jy:
                continue
            assert abs(row["flux_jy"] - flux) < max(0.05 * flux, 4 * row["err_jy"]), (gid, name)
            n_checked += 1
    assert n_checked >= 30


def test_variable_source_is_flagged_and_its_light_curve_follows_the_truth(strip):
    from contimg.state.catalogue import CatalogueDB

    db = CatalogueDB(strip["root"] / "state" / "products.sqlite3")
    try:
        src, _ = _counterpart(strip, "var000", db.sources())
        lc = db.lightcurve(src["name"])
        flagged = [s["name"] for s in db.variables()]
    finally:
        db.close()
    cc = strip["cfg"].catalogue
    assert src["variable"] == 1 and src["eta"] > cc.eta_threshold and src["v"] > cc.v_threshold
    assert src["name"] in flagged
    from contimg.pipeline.catalogue import catalogue_lightcurve

    t = strip["truth"]
    i = list(t["name"]).index("var000")
    by_position, lc_by_position = catalogue_lightcurve(strip["root"], ra_deg=float(np.degrees(t["ra_rad"][i])),
                                                       dec_deg=float(np.degrees(t["dec_rad"][i])))
    assert by_position["name"] == src["name"] and lc_by_position == lc
    truth = t["variable"]
    assert len(lc) == GROUPS
    for row, flux in zip(lc, truth):
        assert abs(row["flux_jy"] - flux) < max(0.05 * flux, 4 * row["err_jy"])


def test_transient_found_and_no_false_candidate(strip):
    """The injected transient is a candidate in its group, within 0.1 beam, with a cut-out PNG
    and an alert; 15 minutes of data give no other candidate (the target: at most one false
    candidate per hour). An operator's verdict is kept."""
    from contimg.pipeline.groupimage import load_group_image
    from contimg.state.catalogue import CatalogueDB

    db = CatalogueDB(strip["root"] / "state" / "products.sqlite3")
    try:
        cands = db.candidates()
        assert len(cands) == 1
        cand = cands[0]
        assert cand["image"] == strip["groups"][STRIP["simulate"]["transient_group"]]
        src, sep = _counterpart(strip, "tra000", db.sources())
        assert cand["source"] == src["name"]
        img = load_group_image(strip["root"], cand["image"])
        beam_arcsec = np.degrees(np.sqrt(img.beam_rad[0] * img.beam_rad[1])) * 3600
        assert sep < 0.1 * beam_arcsec
        assert cand["prior"] and cand["min_rise_sigma"] >= strip["cfg"].catalogue.transient_rise_sigma
        assert Path(cand["cutout_path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert cand["status"] == "new"
        marked = db.mark_candidate(cand["id"], verdict="real", by="operator", note="injected")
        assert marked["status"] == "real" and marked["marked_by"] == "operator"
        with pytest.raises(ValueError):
            db.mark_candidate(cand["id"], verdict="maybe")
        with pytest.raises(KeyError):
            db.mark_candidate("nope#0", verdict="artefact")
    finally:
        db.close()
    alerts = [a for h in strip["hooks"] for a in h["alerts"] if a["category"] == "transient"]
    assert len(alerts) == 1 and cand["source"] in alerts[0]["message"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_at_most_one_false_transient_candidate_per_hour(tmp_path):
    """An hour of strip (12 groups, the same sky model as above, one transient in group 6)
    through the pipeline and the after-group hook: the transient is found, and at most one other
    candidate is raised."""
    from contimg.config import load_config
    from contimg.service.batch import run_batch
    from contimg.sim import simulate

    n = 12
    over = {**STRIP, "simulate": {**STRIP["simulate"], "variable_flux_jy": [], "transient_group": 6}}
    cfg = load_config("test", use_env=False, overrides=over)
    simulate(tmp_path / "in", n_groups=n, cfg=cfg.simulate)
    results, code = run_batch(tmp_path / "in", root=tmp_path / "root", cfg=cfg)  # after_group in the service
    assert code == 0
    with h5py.File(tmp_path / "in" / "truth.h5") as f:
        names = [x.decode() for x in f["sources/name"][()]]
        k = names.index("tra000")
        ra, dec = np.degrees(f["sources/ra_rad"][k]), np.degrees(f["sources/dec_rad"][k])
    from contimg.state.catalogue import CatalogueDB

    db = CatalogueDB(tmp_path / "root" / "state" / "products.sqlite3")
    try:
        cands = db.candidates(limit=1000)
    finally:
        db.close()
    sep = [np.hypot((c["ra_deg"] - ra) * np.cos(np.radians(dec)), c["dec_deg"] - dec) * 3600 for c in cands]
    found = [c for c, s in zip(cands, sep) if s < 10.0]
    assert len(found) == 1 and found[0]["image"] == results[6].group_id
    assert len(cands) - 1 <= 1, [(c["id"], c["snr"]) for c in cands]
    # the first span completed once no group reached it any more: every group that reached it is
    # in it (the next span's first ones included), and its FITS are its final planes
    from contimg.state.mosaics import MosaicsDB

    db = MosaicsDB(tmp_path / "root" / "state" / "products.sqlite3")
    try:
        spans = sorted(db.list(kind="span"), key=lambda r: r["start_mjd"])
    finally:
        db.close()
    first = spans[0]
    assert first["status"] == "complete" and spans[-1]["status"] == "running"
    later = [g for g in first["groups"] if g > spans[1]["groups"][0]]
    assert later, first["groups"]  # groups of the next span deepened its edge before it closed
    planes = read_zarr(first["zarr_path"], ("image", "noise"))[0]
    np.testing.assert_array_equal(fits.getdata(first["image_path"])[0, 0], planes["image"])
    np.testing.assert_array_equal(fits.getdata(first["noise_path"])[0, 0], planes["noise"])


def test_searching_a_group_again_counts_nothing_twice(strip):
    """`update_catalogue` run again on a group (a reprocessed group) leaves the catalogue, the
    forced photometry and the candidates as they were."""
    from contimg.pipeline.catalogue import update_catalogue
    from contimg.state.catalogue import CatalogueDB

    path = strip["root"] / "state" / "products.sqlite3"
    keys = ("name", "n_detections", "ra_deg", "dec_deg", "flux_jy", "first_seen_mjd", "last_seen_mjd", "n_forced")

    def state():
        db = CatalogueDB(path)
        try:
            return ([tuple(s[k] for k in keys) for s in db.sources()], len(db.detections()),
                    sum(len(db.forced_in(g)) for g in strip["groups"]), [(c["id"], c["status"]) for c in db.candidates()])
        finally:
            db.close()

    before = state()
    update_catalogue(strip["root"], strip["groups"][-1], cfg=strip["cfg"])
    after = state()
    assert after[1:] == before[1:]
    assert [s[:2] for s in after[0]] == [s[:2] for s in before[0]]
    for a, b in zip(after[0], before[0]):
        assert np.allclose(a[2:], b[2:], rtol=1e-9, atol=1e-12)


def test_the_commands_build_a_mosaic_and_a_light_curve_by_position(strip, capsys):
    """`contimg mosaic` builds a named mosaic of chosen groups from the root (FITS with a
    celestial WCS, a products row); `contimg lightcurve RA DEC` finds the pipeline's own
    catalogue source nearest the variable's true position and writes its forced photometry."""
    import csv

    from contimg.cli import main
    from contimg.state.catalogue import CatalogueDB
    from contimg.state.mosaics import MosaicsDB

    from contimg.state.rootconfig import store_config

    root, groups = strip["root"], strip["groups"]
    store_config(root, strip["cfg"])  # as `contimg run` leaves it (the fixture ran run_batch itself)
    assert main(["mosaic", "--root", str(root), "--groups", *groups[:2], "--name", "first-two"]) == 0
    out = capsys.readouterr().out
    # bad requests: a clear message, exit 1
    assert main(["mosaic", "--root", str(root), "--groups", "2020-01-01T00:00:00"]) == 1
    assert "no completed group to mosaic among ['2020-01-01T00:00:00']" in capsys.readouterr().err
    assert main(["mosaic", "--root", str(root), "--workers", "2"]) == 1
    assert "--workers build the spans (--spans)" in capsys.readouterr().err
    assert out.startswith("mosaic first-two: 2 groups, complete")
    db = MosaicsDB(root / "state" / "products.sqlite3")
    try:
        row = next(r for r in db.list() if r["name"] == "first-two")
    finally:
        db.close()
    assert WCS(fits.getheader(row["image_path"])).celestial.has_celestial
    t = strip["truth"]
    k = int(np.flatnonzero(np.char.startswith(t["name"].astype(str), "var"))[0])
    ra, dec = np.degrees(t["ra_rad"][k]), np.degrees(t["dec_rad"][k])
    assert main(["lightcurve", f"{ra:.6f}", f"{dec:.6f}", "--root", str(root), "--no-plot"]) == 0
    said = capsys.readouterr().out.splitlines()
    name, csv_path = said[0].split(":")[0], said[1].strip()
    cat = CatalogueDB(root / "state" / "products.sqlite3")
    try:
        expect = cat.lightcurve(name)
    finally:
        cat.close()
    assert csv_path.endswith(".csv")
    with open(csv_path) as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == len(expect) >= 2
    assert [float(r["flux_jy"]) for r in got] == pytest.approx([r["flux_jy"] for r in expect])
    assert main(["lightcurve", "10", "80", "--root", str(root)]) == 2  # nothing there


def test_span_mosaics_rebuilt_on_a_dask_cluster_equal_the_serial_build_and_the_services(strip, tmp_path):
    """The archive path (`contimg mosaic --spans`): every span rebuilt from the groups' images,
    in turn and as one Dask task per span on a local cluster of two worker processes, gives the
    same planes bit for bit, and the planes the service built group by group (to float32
    rounding: the service's grid of a span may come from a neighbouring span's group); every
    rebuilt span is complete and holds the same groups."""
    import shutil

    from distributed import Client, LocalCluster

    from contimg.pipeline.mosaic import build_span_mosaics

    service = {}
    for r in _span_rows(strip["root"]):
        service[r["name"]] = (read_zarr(r["zarr_path"])[0], r["groups"])
    built = {}
    for how in ("serial", "dask"):
        root = tmp_path / how
        shutil.copytree(strip["root"], root, ignore=shutil.ignore_patterns("*.fits", "*.png"))
        if how == "serial":
            rows = build_span_mosaics(root, cfg=strip["cfg"])
        else:
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                rows = build_span_mosaics(root, cfg=strip["cfg"], client=client)
        assert sorted(r["name"] for r in rows) == sorted(service) and all(r["status"] == "complete" for r in rows)
        built[how] = {r["name"]: (read_zarr(r["zarr_path"])[0], r["groups"]) for r in rows}
    for name, (planes, groups) in service.items():
        serial, dask_built = built["serial"][name], built["dask"][name]
        assert serial[1] == dask_built[1] == groups
        for key in ("image", "residual", "noise", "pb_weight", "weight", "count"):
            np.testing.assert_array_equal(serial[0][key], dask_built[0][key])
            np.testing.assert_allclose(serial[0][key], planes[key], rtol=1e-5, atol=1e-6 * np.nanmax(planes[key]))


def _span_rows(root):
    from contimg.state.mosaics import MosaicsDB

    db = MosaicsDB(root / "state" / "products.sqlite3")
    try:
        return db.list(kind="span")
    finally:
        db.close()

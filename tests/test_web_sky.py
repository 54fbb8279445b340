"""The strip mosaic and the pipeline's own catalogue on the web view: the mosaic viewer's REST
(``/api/mosaics/{name}/meta``, ``/array``, ``/overlay``) read back against zarr, astropy and
sqlite3 for a running span (its Zarr planes) and a complete mosaic (its FITS); a source page of
the own catalogue (``/api/sources/{name}`` falling back to ``CatalogueDB``); transient
candidates with their cut-outs; and the page in a real headless Chromium: the "Strip mosaic"
panel lists the products DB's mosaics, the viewer's cursor on the running mosaic reads the Zarr
pixel and the WCS position of a known source, the light-curve panel lists the own catalogue and
the candidates, and an own source's page shows its forced-photometry rows. Screenshots go to
tests/artifacts/ (with CONTIMG_WRITE_DOC_IMAGES=1 docs/images/web-mosaic.png is replaced)."""

from __future__ import annotations

import re
import shutil
import sqlite3

import httpx
import numpy as np
import pytest
from webutil import ServiceThread

from contimg.config import load_config

CUSTOM = "custom_test_2g"


def _q(root, sql: str, args=()) -> list[dict]:
    """Rows of the products DB, read with plain sqlite3 (an independent reading)."""
    con = sqlite3.connect(root / "state" / "products.sqlite3")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


@pytest.fixture(scope="module")
def sky(tmp_path_factory, sim_dir):
    """A root with both simulated groups processed (a running span mosaic, the own catalogue
    with forced photometry), a custom mosaic built after the fact (complete, FITS), one
    transient candidate with its cut-out, and a service serving it."""
    from contimg.io.naming import group_files, scan_folder
    from contimg.pipeline.catalogue import _cutout
    from contimg.pipeline.groupimage import load_group_image
    from contimg.pipeline.mosaic import build_mosaic
    from contimg.service.batch import run_batch
    from contimg.state.catalogue import CatalogueDB

    base = tmp_path_factory.mktemp("websky")
    cfg = load_config("test", use_env=False, overrides={
        "image": {"npix": 256, "cell_arcsec": 20.0, "niter": 50, "products": ["restored"]},
        "web": {"port": 0, "token": "t0ken"}, "service": {"settle_s": 0.2, "poll_interval_s": 0.2}})
    assert cfg.mosaic.enabled and cfg.catalogue.enabled  # the defaults
    groups = group_files(scan_folder(sim_dir), tolerance_s=60)
    root = base / "root"
    _, code = run_batch(sim_dir, root=root, cfg=cfg)
    assert code == 0
    build_mosaic(root, cfg=cfg, name=CUSTOM)
    # a transient candidate as the catalogue update records one: a detection of the second group
    gid = groups[1].group_id
    det = max(_q(root, "SELECT * FROM catalogue_detections WHERE image = ?", [gid]), key=lambda d: d["snr"])
    png = _cutout(load_group_image(root, gid), det, root / "products" / gid / "qa" / f"{gid}.transient{det['n']}.png",
                  cfg)
    db = CatalogueDB(root / "state" / "products.sqlite3")
    try:
        db.record_candidate({"id": f"{gid}#{det['n']}", "image": gid, "mid_mjd": det["mid_mjd"], "ra_deg": det["ra_deg"],
                             "dec_deg": det["dec_deg"], "flux_jy": det["flux_jy"], "err_jy": det["err_jy"],
                             "snr": det["snr"], "pb": det["pb"], "prior": [], "min_rise_sigma": 9.0,
                             "cutout_path": str(png), "source": det["source"]})
    finally:
        db.close()
    (root / "incoming").mkdir(exist_ok=True)
    st = ServiceThread(root, cfg).start()
    yield st, root, groups
    assert st.stop() == 0


def _running(root) -> dict:
    rows = _q(root, "SELECT * FROM mosaics WHERE status = 'running'")
    assert len(rows) == 1, rows
    return rows[0]


def _ranked(root) -> list[str]:
    rows = _q(root, "SELECT name, variable, eta, flux_jy FROM catalogue_sources")
    rows.sort(key=lambda s: (-(s["variable"] or 0), s["eta"] is None, -(s["eta"] or 0), -s["flux_jy"]))
    return [s["name"] for s in rows]


def _zarr_image(row: dict):
    import zarr
    from astropy.io import fits

    grp = zarr.open_group(row["zarr_path"], mode="r")
    return np.asarray(grp["image"][...]), fits.Header.fromstring(grp.attrs["header"])


def test_running_mosaic_meta_array_overlay(sky):
    """A running span is read from its Zarr planes: its size, statistics and pixels are what
    zarr reads; its own-catalogue sources are at the pixels astropy's WCS gives."""
    from astropy.wcs import WCS

    st, root, groups = sky
    row = _running(root)
    assert sorted(row["groups"][2:-2].replace('"', "").split(", ")) == sorted(g.group_id for g in groups)
    data, header = _zarr_image(row)
    ny, nx = data.shape
    m = httpx.get(st.url + f"/api/mosaics/{row['name']}/meta").json()
    assert (m["nx"], m["ny"], m["read_from"], m["status"], m["n_groups"]) == (nx, ny, "zarr", "running", 2)
    assert m["crval1"] == pytest.approx(header["CRVAL1"]) and m["cdelt2"] == pytest.approx(header["CDELT2"])
    finite = data[np.isfinite(data)]
    assert 0 < m["finite_fraction"] < 1  # two groups cover part of the hour's grid
    assert m["median"] == pytest.approx(float(np.median(finite)), rel=1e-6)
    assert m["max"] == pytest.approx(float(finite.max()), rel=1e-6)
    cols = np.flatnonzero(np.isfinite(data).any(axis=0))
    assert m["data_box"][:2] == [int(cols[0]), int(cols[-1]) + 1]

    r = httpx.get(st.url + f"/api/mosaics/{row['name']}/array?step={m['step']}")
    assert r.status_code == 200 and r.headers["X-Shape"] == f"{ny},{nx}"
    got = np.frombuffer(r.content, "<f4").reshape(ny, nx)
    np.testing.assert_array_equal(got, data.astype(np.float32))  # NaN where no image reaches, as stored
    r = httpx.get(st.url + f"/api/mosaics/{row['name']}/array?x0={cols[0] + 10}&y0=20&w=33&h=17&step=2")
    win = np.frombuffer(r.content, "<f4").reshape(*map(int, r.headers["X-Shape"].split(",")))
    np.testing.assert_array_equal(win, data[20:37:2, cols[0] + 10:cols[0] + 43:2])
    noise = httpx.get(st.url + f"/api/mosaics/{row['name']}/meta?plane=noise").json()
    assert noise["plane"] == "noise" and noise["min"] > 0

    ov = httpx.get(st.url + f"/api/mosaics/{row['name']}/overlay").json()
    assert ov["mosaic"] == row["name"] and ov["catalogue"] == []
    sources = _q(root, "SELECT name, ra_deg, dec_deg FROM catalogue_sources")
    x, y = WCS(header).celestial.world_to_pixel_values([s["ra_deg"] for s in sources], [s["dec_deg"] for s in sources])
    xi, yi = np.round(x).astype(int), np.round(y).astype(int)
    inside = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
    on_data = {s["name"] for s, k, a, b in zip(sources, inside, xi, yi) if k and np.isfinite(data[b, a])}
    assert {o["source"] for o in ov["own"]} == on_data and len(on_data) >= 10
    by_name = {s["name"]: (px, py) for s, px, py in zip(sources, x, y)}
    for o in ov["own"]:
        assert (o["x"], o["y"]) == pytest.approx(by_name[o["source"]], abs=1e-6)
    (cand,) = _q(root, "SELECT * FROM transient_candidates")
    assert [t["id"] for t in ov["transients"]] == [cand["id"]]


def test_complete_mosaic_from_fits(sky):
    """A complete mosaic is read from its FITS files (image and noise)."""
    from astropy.io import fits

    st, root, _ = sky
    (row,) = _q(root, "SELECT * FROM mosaics WHERE name = ?", [CUSTOM])
    assert row["status"] == "complete" and row["kind"] == "custom"
    data = np.squeeze(fits.getdata(row["image_path"])).astype(np.float32)
    m = httpx.get(st.url + f"/api/mosaics/{CUSTOM}/meta").json()
    assert m["read_from"] == "fits" and (m["ny"], m["nx"]) == data.shape
    assert m["p99_5"] == pytest.approx(float(np.percentile(data[np.isfinite(data)], 99.5)), rel=1e-4)  # float32 interpolation
    r = httpx.get(st.url + f"/api/mosaics/{CUSTOM}/array?step={m['step']}&plane=noise")
    got = np.frombuffer(r.content, "<f4").reshape(*map(int, r.headers["X-Shape"].split(",")))
    noise = np.squeeze(fits.getdata(row["noise_path"])).astype(np.float32)
    np.testing.assert_array_equal(got, noise[::m["step"], ::m["step"]])
    assert httpx.get(st.url + "/api/mosaics/no_such_mosaic/meta").status_code == 404
    assert httpx.get(st.url + f"/api/mosaics/{CUSTOM}/meta?plane=residual").status_code == 422
    assert httpx.get(st.url + f"/api/mosaics/{CUSTOM}/array?x0=100000&w=4&h=4").status_code == 422


def test_own_catalogue_source_and_candidates(sky):
    """A source that only the own catalogue holds has a light curve (its forced photometry), η
    and V from its row; the image overlay carries the own catalogue and the candidate; the
    candidate's cut-out is served."""
    from astropy.io import fits
    from astropy.wcs import WCS

    st, root, groups = sky
    src = max(_q(root, "SELECT * FROM catalogue_sources WHERE n_forced >= 2"), key=lambda s: s["flux_jy"])
    forced = _q(root, "SELECT * FROM forced_photometry WHERE source = ? AND kind = 'group' ORDER BY mid_mjd", [src["name"]])
    assert len(forced) == 2
    assert httpx.get(st.url + "/api/variables").json() == [] or src["name"] not in {
        v["source"] for v in httpx.get(st.url + "/api/variables").json()}  # not an external-catalogue source
    s = httpx.get(st.url + "/api/sources/" + src["name"]).json()
    assert s["catalogue"] == "own" and s["ra_deg"] == pytest.approx(src["ra_deg"])
    assert [p["group_id"] for p in s["points"]] == [f["image"] for f in forced]
    for p, f in zip(s["points"], forced):
        assert (p["flux_jy"], p["err_jy"], p["mid_mjd"], p["x"], p["y"]) == (f["flux_jy"], f["err_jy"], f["mid_mjd"],
                                                                             f["x"], f["y"])
        assert p["image_id"] is not None
    assert s["stats"]["eta"] == pytest.approx(src["eta"]) and s["stats"]["v"] == pytest.approx(src["v"])
    assert s["own"]["n_detections"] == src["n_detections"]
    assert httpx.get(st.url + "/api/sources/CTG J000000.0+000000").status_code == 404

    # the light-curve panel's list: variability candidates, then the highest η, then the brightest
    r = httpx.get(st.url + "/api/catalogue?order=interest&limit=15")
    assert [s["name"] for s in r.json()] == _ranked(root)[:15]
    rows = _q(root, "SELECT variable FROM catalogue_sources")
    assert r.headers["X-Total-Count"] == str(len(rows))
    assert r.headers["X-Variable-Count"] == str(sum(1 for x in rows if x["variable"] == 1))

    (cand,) = _q(root, "SELECT * FROM transient_candidates")
    gid = groups[1].group_id
    img = httpx.get(st.url + f"/api/images?group_id={gid}&type=restored").json()[0]
    ov = httpx.get(st.url + f"/api/images/{img['id']}/overlay").json()
    mine = _q(root, "SELECT * FROM forced_photometry WHERE image = ?", [gid])
    assert {(o["source"], o["x"], o["y"], o["flux_jy"]) for o in ov["own"]} == {
        (f["source"], f["x"], f["y"], f["flux_jy"]) for f in mine}
    (t,) = ov["transients"]
    path = _q(root, "SELECT path FROM images WHERE rowid = ?", [img["id"]])[0]["path"]
    with fits.open(path) as hdul:
        x, y = WCS(hdul[0].header).celestial.world_to_pixel_values(cand["ra_deg"], cand["dec_deg"])
    assert (t["id"], t["status"]) == (cand["id"], "new") and (t["x"], t["y"]) == pytest.approx((float(x), float(y)))
    c = httpx.get(st.url + "/api/candidates").json()["transients"]
    assert [r["id"] for r in c] == [cand["id"]] and c[0]["cutout_url"] == t["cutout_url"]
    png = httpx.get(st.url + c[0]["cutout_url"])
    assert png.status_code == 200 and png.content == open(cand["cutout_path"], "rb").read()


def test_mosaic_panel_viewer_and_own_source_page(sky):
    """The page in Chromium: the strip panel lists the mosaics of the products DB (running
    first); the viewer on the running mosaic reads, under the cursor on the brightest own-catalogue
    source, the Zarr pixel and the WCS's RA/Dec; the light-curve panel lists the own catalogue
    and the transient candidate; an own source's page shows its forced-photometry rows."""
    from astropy.wcs import WCS
    from playwright.sync_api import expect, sync_playwright
    from test_browser import ARTIFACTS, _axes_ok, _chromium, _shot

    st, root, _ = sky
    chromium = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    row = _running(root)
    data, header = _zarr_image(row)
    wcs = WCS(header).celestial
    rows = _q(root, "SELECT name, status, start_mjd FROM mosaics")
    want = [r["name"] for r in sorted(rows, key=lambda r: (r["status"] != "running", -r["start_mjd"]))]
    ov = httpx.get(st.url + f"/api/mosaics/{row['name']}/overlay").json()
    best = max(ov["own"], key=lambda o: o["flux_jy"])
    x, y = (int(round(float(v))) for v in wcs.world_to_pixel_values(best["ra_deg"], best["dec_deg"]))
    src = max(_q(root, "SELECT * FROM catalogue_sources WHERE n_forced >= 2"), key=lambda s: s["flux_jy"])
    forced = _q(root, "SELECT * FROM forced_photometry WHERE source = ? AND kind = 'group' ORDER BY mid_mjd", [src["name"]])
    (cand,) = _q(root, "SELECT * FROM transient_candidates")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(st.url + "/")
        expect(page.locator("#mosaics")).to_have_attribute("data-names", ",".join(want), timeout=20_000)
        expect(page.locator("#mosaic-empty")).to_be_hidden()
        running = page.locator(f'#mosaics tr[data-name="{row["name"]}"]')
        expect(running).to_have_attribute("data-status", "running")
        expect(running).to_contain_text("Zarr only while running")
        expect(page.locator(f'#mosaics tr[data-name="{CUSTOM}"] a')).to_have_count(3)  # its image, noise and weight FITS
        expect(page.locator("#mosaic-preview")).to_be_visible()

        # the light-curve panel: the own catalogue and the transient candidate with its cut-out
        n_src = len(_q(root, "SELECT name FROM catalogue_sources"))
        expect(page.locator("#own-info")).to_contain_text(f"{n_src} sources")
        expect(page.locator("#own-sources tbody tr")).to_have_count(min(15, n_src))
        shown = page.locator("#own-sources tbody tr").evaluate_all("rows => rows.map((r) => r.dataset.source)")
        assert shown == _ranked(root)[:15]
        trow = page.locator(f'#transients tr[data-id="{cand["id"]}"]')
        expect(trow).to_have_attribute("data-status", "new")
        expect(trow.locator("img")).to_have_js_property("complete", True)
        assert trow.locator("img").evaluate("i => i.naturalWidth") > 0
        page.locator("#mosaic-panel").scroll_into_view_if_needed()
        _shot(page, "web-mosaic-panel.png", clip=page.locator("#mosaic-panel").bounding_box())

        # the viewer on the running mosaic: the cursor on the brightest own source
        running.click()
        expect(page.locator("#viewer")).to_be_visible()
        canvas = page.locator("#v-canvas")
        expect(canvas).to_have_attribute("data-ready", "1", timeout=30_000)
        assert canvas.get_attribute("data-base") == f"/api/mosaics/{row['name']}"
        expect(page.locator("#v-title")).to_contain_text("running Zarr planes")
        expect(page.locator("#v-legend")).to_contain_text(f"{len(ov['own'])} of the pipeline's own catalogue")
        _shot(page, "web-mosaic-fit.png")
        page.locator("#v-in").click()
        page.evaluate(f"""() => {{ const c = document.getElementById('v-canvas'), [cx, cy] = imageToCanvas({x}, {y});
            VIEW.ox += c.width / 2 - cx; VIEW.oy += c.height / 2 - cy; viewerDraw(); }}""")
        page.mouse.move(*page.evaluate(f"viewerScreenOf({x}, {y})"))
        readout = page.locator("#v-readout")
        expect(readout).to_have_attribute("data-x", str(x))
        expect(readout).to_have_attribute("data-y", str(y))
        value = float(readout.get_attribute("data-value"))
        assert value == pytest.approx(float(data[y, x]), rel=1e-4)
        assert value > 10 * httpx.get(st.url + f"/api/mosaics/{row['name']}/meta").json()["rms_mad"]  # a source
        text = readout.text_content()
        ra, dec = (float(v) for v in wcs.pixel_to_world_values(x, y))
        got = re.search(r"\(([\d.]+)°, ([\-\d.]+)°\)", text)
        assert abs(float(got.group(1)) - ra) < 2e-4 and abs(float(got.group(2)) - dec) < 2e-4, (text, ra, dec)
        assert best["source"] in text and "own catalogue" in text
        page.locator("#v-fit").click()  # the covered part of the strip, the cursor on the same source
        page.mouse.move(*page.evaluate(f"viewerScreenOf({x}, {y})"))
        expect(readout).to_have_attribute("data-x", str(x))
        assert best["source"] in readout.text_content()
        _shot(page, "web-mosaic.png", doc=True)
        page.locator("#v-close").click()
        _shot(page, "web-sky-page.png", full_page=True)

        # the source page of an own-catalogue source: its forced photometry, point by point
        page.goto(st.url + f"/source/{src['name']}")
        expect(page.locator("#lightcurve")).to_have_attribute("data-points", str(len(forced)), timeout=20_000)
        _axes_ok(page, "lightcurve", "UTC", "flux density (mJy)")
        expect(page.locator("#src-kind")).to_have_text("the pipeline's own catalogue")
        shown = page.locator("#lc-table tbody tr")
        expect(shown).to_have_count(len(forced))
        for k, f in enumerate(forced):
            tr = shown.nth(k)
            assert tr.get_attribute("data-group") == f["image"]
            assert float(tr.get_attribute("data-flux")) == pytest.approx(f["flux_jy"], rel=1e-12)
            assert float(tr.get_attribute("data-err")) == pytest.approx(f["err_jy"], rel=1e-12)
        expect(page.locator("#src-stats")).to_contain_text(f"{src['eta']:.2f}")
        expect(page.locator("#cutouts")).to_have_attribute("data-count", str(len(forced)), timeout=20_000)
        _shot(page, "web-source-own.png", full_page=True)
        browser.close()
    assert not errors, errors

"""The web view's REST API and WebSockets against a real service (uvicorn on the service's loop)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time

import httpx
import pytest
import websockets

from contimg.config import load_config
from webutil import ServiceThread

TOKEN = "s3cret-test-token"


@pytest.fixture(scope="module")
def web(tmp_path_factory, sim_dir):
    """A root with the two session groups processed, and a service serving it (port 0)."""
    from contimg.io.naming import group_files, scan_folder
    from contimg.service.batch import run_batch

    base = tmp_path_factory.mktemp("web")
    cfg = load_config("test", use_env=False, overrides={
        "image": {"npix": 256, "cell_arcsec": 20.0, "niter": 50, "products": ["dirty", "restored"]},
        "web": {"port": 0, "token": TOKEN}, "service": {"settle_s": 0.2, "poll_interval_s": 0.2}})
    groups = group_files(scan_folder(sim_dir), tolerance_s=60)
    src = base / "in"
    src.mkdir()
    for p in groups[0].files.values():
        shutil.copy(p, src / p.name)
    root = base / "root"
    _, code = run_batch(src, root=root, cfg=cfg)
    assert code == 0
    st = ServiceThread(root, cfg).start()
    yield st, groups, cfg
    assert st.stop() == 0


def test_status_and_openapi(web):
    st, groups, _ = web
    r = httpx.get(st.url + "/api/status")
    assert r.status_code == 200
    s = r.json()
    backends = dict(part.split() for part in s["backend"].split(", "))  # each device stage's backend
    assert set(backends) == {"flag", "calibrate", "image"} and set(backends.values()) <= {"cpu", "gpu"}
    assert s["queue"]["completed"] == 1 and s["mode"] == "serve"
    assert {t["task"] for t in s["tasks"]} >= {"scheduler", "reader", "processor", "writer", "web", "watcher"}
    spec = httpx.get(st.url + "/api/openapi.json").json()
    for path in ("/api/status", "/api/groups", "/api/groups/{group_id}", "/api/ms_index", "/api/images",
                 "/api/images/{image_id}", "/api/caltables", "/api/qa", "/api/alerts", "/api/metrics",
                 "/api/reprocess/{group_id}", "/api/mosaics/{name}/meta", "/api/mosaics/{name}/array",
                 "/api/mosaics/{name}/overlay", "/api/sources/{source}"):
        assert path in spec["paths"], path
    for model in ("StatusOut", "GroupOut", "GroupDetail", "ImageOut", "CalTableOut", "QAOut", "AlertOut",
                  "ReprocessOut", "FlagsOut", "GainsOut", "ImageMetaOut", "MosaicMetaOut", "OverlayOut", "SourceOut"):
        assert model in spec["components"]["schemas"], model


def test_groups_images_and_files(web):
    st, groups, _ = web
    gid = groups[0].group_id
    rows = httpx.get(st.url + "/api/groups").json()
    assert [g["group_id"] for g in rows] == [gid] and rows[0]["state"] == "completed"
    d = httpx.get(st.url + f"/api/groups/{gid}").json()
    assert len(d["files"]) == 16 and {t["stage"] for t in d["timings"]} >= {"read", "flag", "calibrate", "image"}
    assert httpx.get(st.url + "/api/groups/2001-01-01T00:00:00").status_code == 404
    assert httpx.get(st.url + "/api/groups/not-a-group").status_code == 404  # could be a file group's name
    bad = httpx.get(st.url + "/api/groups/not a group!")  # a group id is a time or a file's safe name
    assert bad.status_code == 422 and "pattern" in bad.text
    assert httpx.get(st.url + "/api/groups?limit=0").status_code == 422
    assert httpx.get(st.url + "/api/groups?state=lost").status_code == 422
    flags = httpx.get(st.url + f"/api/groups/{gid}/flags").json()
    assert 0 < flags["fraction"] < 1 and len(flags["per_channel"]) == 64

    assert httpx.get(st.url + "/api/ms_index").json()[0]["group_id"] == gid
    imgs = httpx.get(st.url + "/api/images").json()
    assert sorted(i["type"] for i in imgs) == ["dirty", "restored"]
    restored = next(i for i in imgs if i["type"] == "restored")
    assert httpx.get(st.url + f"/api/images/{restored['id']}").json() == restored
    fits_bytes = httpx.get(st.url + restored["fits_url"]).content
    assert fits_bytes.startswith(b"SIMPLE  =")
    png = httpx.get(st.url + restored["thumbnail_url"] + "?size=128")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    from io import BytesIO

    from PIL import Image

    assert max(Image.open(BytesIO(png.content)).size) == 128
    assert httpx.get(st.url + "/api/images/999999").status_code == 404
    assert httpx.get(st.url + "/api/images?type=bogus").status_code == 422

    tables = httpx.get(st.url + "/api/caltables").json()
    assert sorted(t["cal_type"] for t in tables) == ["bandpass", "gains"]
    cal = [t for t in tables if t["cal_type"] == "bandpass"]
    assert cal[0]["calibrator"] == "1156+314"
    # the registry's rows: active, valid 24 h (bandpass) and 1 h (time gains) either side of the
    # solution's mid-time (config defaults)
    assert all(t["status"] == "active" and t["name"] == cal[0]["name"] for t in tables)
    assert abs(cal[0]["valid_end_mjd"] - cal[0]["mid_mjd"] - 1.0) < 1e-9
    assert abs(cal[0]["mid_mjd"] - cal[0]["valid_start_mjd"] - 1.0) < 1e-9
    gains_row = next(t for t in tables if t["cal_type"] == "gains")
    assert abs(gains_row["valid_end_mjd"] - gains_row["mid_mjd"] - 1 / 24) < 1e-9
    gains = httpx.get(st.url + f"/api/caltables/{cal[0]['name']}/gains?antenna=24").json()
    assert len(gains["amp"]) == 2 and len(gains["freq_mhz"]) == 64
    assert httpx.get(st.url + f"/api/caltables/{cal[0]['name']}/gains?antenna=999").status_code == 404
    qa = httpx.get(st.url + "/api/qa").json()
    assert qa[0]["group_id"] == gid and qa[0]["noise_jy"] > 0 and 0 < qa[0]["flag_fraction"] < 1
    metrics = httpx.get(st.url + "/api/metrics").text
    assert 'contimg_groups{state="completed"} 1.0' in metrics and "contimg_stage_seconds_total" in metrics
    # each stage's backend as the service chose it at start-up (no device here: the CPU, unchecked)
    for stage in ("flag", "calibrate", "image"):
        assert f'contimg_stage_on_device{{checked="false",requested="auto",stage="{stage}"}} 0.0' in metrics, metrics
    assert isinstance(httpx.get(st.url + "/api/alerts").json(), list)


def test_files_only_from_the_products_folder(web):
    st, groups, _ = web
    gid = groups[0].group_id
    ok = httpx.get(st.url + f"/api/products/{gid}/{gid}.restored.fits")
    assert ok.status_code == 200
    root = st.svc.root
    (root / "products" / "escape.lnk").symlink_to(root / "state" / "ingest.sqlite3")
    attempts = ["/api/products/../state/ingest.sqlite3", "/api/products/%2e%2e/state/ingest.sqlite3",
                "/api/products/%2E%2E%2Fstate%2Fingest.sqlite3", "/api/products/..%2f..%2fetc%2fpasswd",
                "/api/products//etc/passwd", "/api/products/%2Fetc%2Fpasswd", "/api/products/escape.lnk"]
    with httpx.Client(base_url=st.url) as client:
        for raw in attempts:
            r = client.send(httpx.Request("GET", httpx.URL(st.url, raw_path=raw.encode())))
            assert r.status_code in (403, 404), (raw, r.status_code)
            assert b"SQLite" not in r.content and b"root:" not in r.content


def test_reprocess_needs_the_token_then_runs(web):
    st, groups, _ = web
    gid = groups[0].group_id
    url = st.url + f"/api/reprocess/{gid}?from_stage=image"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(st.url + f"/api/reprocess/{gid}?from_stage=bogus",
                      headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 422
    r = httpx.post(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json() == {"group_id": gid, "from_stage": "image", "state": "pending"}
    t_end = time.time() + 120
    while time.time() < t_end:
        g = httpx.get(st.url + f"/api/groups/{gid}").json()
        if g["state"] == "completed" and sum(t["stage"] == "image" and not t["replayed"] for t in g["timings"]) == 2:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("reprocess did not complete")


def test_status_websocket_pushes_events_and_validates_types(web):
    from contimg.bus import Alert

    st, groups, _ = web
    ws_url = st.url.replace("http", "ws")

    async def main():
        async with websockets.connect(ws_url + "/ws/status?types=health") as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] == "health"
        async with websockets.connect(ws_url + "/ws/status?types=alert") as ws:
            st.loop.call_soon_threadsafe(st.svc.bus.publish, Alert("warning", "test", "a test alert"))
            seen = []  # the machine may have raised real alerts before (low disk space, say)
            while not seen or seen[-1]["message"] != "a test alert":
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            assert {e["type"] for e in seen} == {"alert"}
        alerts = httpx.get(st.url + "/api/alerts").json()
        assert alerts[0]["category"] == "test" and alerts[0]["severity"] == "warning"
        with pytest.raises(websockets.exceptions.WebSocketException):
            async with websockets.connect(ws_url + "/ws/status?types=nonsense") as ws:
                await asyncio.wait_for(ws.recv(), 10)

    asyncio.run(main())


def test_waterfall_websocket_streams_rows_of_a_new_group(web, sim_dir):
    st, groups, cfg = web
    ws_url = st.url.replace("http", "ws")
    incoming = st.svc.root / "incoming"

    async def main():
        async with websockets.connect(ws_url + "/ws/waterfall?select=ant:24&pol=I") as ws:
            for p in groups[1].files.values():  # the second group arrives
                shutil.copy(p, incoming / p.name)
            while True:
                ev = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if ev["type"] == "waterfall" and ev["group_id"] == groups[1].group_id:
                    break
            assert ev["selection"] == "ant:24" and ev["pol"] == "I"
            assert len(ev["amp"]) == 24 and len(ev["amp"][0]) == len(ev["freq_mhz"]) == 64
            assert all(0 <= f <= 1 for row in ev["flagged"] for f in row)
            await ws.send(json.dumps({"select": "bl:24-25", "pol": "XX"}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ack == {"type": "selected", "select": "bl:24-25", "pol": "XX"}
            window = json.loads(await asyncio.wait_for(ws.recv(), 10))  # then the new selection's history
            assert window == {"type": "window", "window_s": cfg.web.waterfall_history_s, "select": "bl:24-25",
                              "pol": "XX"}
            await ws.send(json.dumps({"select": "ant:x"}))
            while (err := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] == "waterfall":
                pass
            assert err["type"] == "error" and "ant:x" in err["message"]
        # a page opening later gets the window of history at once: the window, then the group's rows
        async with websockets.connect(ws_url + "/ws/waterfall?select=ant:24&pol=I", max_size=None) as ws:
            window = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert window["type"] == "window" and window["window_s"] == cfg.web.waterfall_history_s
            rows = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert rows["type"] == "waterfall" and rows["group_id"] == groups[1].group_id
            assert rows["selection"] == "ant:24" and len(rows["amp"]) == 24

    asyncio.run(main())
    # the averaged rows equal the mean |V| over the unflagged cross-correlations, from numpy
    import numpy as np

    from contimg.io.naming import Group
    from contimg.io.reader import read_group

    chunk = read_group(Group(groups[1].group_id, groups[1].files), n_subbands=16)
    ev = st.svc.last_waterfall[("avg", "XX")]
    cross = chunk.ant1 != chunk.ant2
    v = np.abs(chunk.vis[:, cross][..., 0])  # (ntime, ncross, nchan)
    good = ~chunk.flags[:, cross][..., 0]
    expect = (v * good).sum(axis=1) / good.sum(axis=1)
    got = np.array([[np.nan if x is None else x for x in row] for row in ev.amp])
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    assert os.environ.get("CONTIMG_WEB_TOKEN") is None


def test_image_viewer_data_against_the_fits_file(web):
    """The viewer's endpoints give the FITS file's own pixels and WCS keywords (astropy reads the same file)."""
    import sqlite3

    import numpy as np
    from astropy.io import fits

    st, groups, _ = web
    gid = groups[0].group_id
    restored = next(i for i in httpx.get(st.url + f"/api/images?group_id={gid}").json() if i["type"] == "restored")
    path = st.svc.root / "products" / gid / f"{gid}.restored.fits"
    with fits.open(path) as hdul:
        header, data = hdul[0].header, np.squeeze(hdul[0].data).astype(np.float32)
    meta = httpx.get(st.url + f"/api/images/{restored['id']}/meta").json()
    assert (meta["ny"], meta["nx"]) == data.shape and meta["step"] == 1 and meta["bunit"] == header["BUNIT"]
    for key in ("crval1", "crval2", "crpix1", "crpix2", "cdelt1", "cdelt2"):
        assert meta[key] == header[key.upper()], key
    finite = data[np.isfinite(data)]
    assert meta["p99_5"] == pytest.approx(float(np.percentile(finite, 99.5)), rel=1e-5)
    assert meta["max"] == pytest.approx(float(finite.max()))

    def array(query):
        r = httpx.get(st.url + f"/api/images/{restored['id']}/array{query}")
        assert r.status_code == 200, r.text
        shape = tuple(int(n) for n in r.headers["X-Shape"].split(","))
        return np.frombuffer(r.content, "<f4").reshape(shape)

    np.testing.assert_array_equal(array(""), data)
    np.testing.assert_array_equal(array("?step=2"), data[::2, ::2])
    np.testing.assert_array_equal(array("?x0=10&y0=20&w=30&h=40"), data[20:60, 10:40])
    assert httpx.get(st.url + f"/api/images/{restored['id']}/array?x0=5000&w=4&h=4").status_code == 422
    assert httpx.get(st.url + "/api/images/999999/array").status_code == 404

    # the overlay: the products database's forced photometry and detections of this group
    con = sqlite3.connect(f"file:{st.svc.root / 'state' / 'products.sqlite3'}?mode=ro", uri=True)
    try:
        phot = {r[0]: (r[1], r[2]) for r in con.execute("SELECT source, x, y FROM photometry WHERE group_id = ?", [gid])}
        n_found = con.execute("SELECT COUNT(*) FROM detections WHERE group_id = ?", [gid]).fetchone()[0]
    finally:
        con.close()
    overlay = httpx.get(st.url + f"/api/images/{restored['id']}/overlay").json()
    assert {s["source"]: (s["x"], s["y"]) for s in overlay["catalogue"]} == phot and phot
    assert len(overlay["found"]) == n_found > 0
    assert not any(s["candidate"] for s in overlay["catalogue"])  # one group: no light curve yet

    # a source: its light curve with the restored image of each point
    name = next(iter(phot))
    src = httpx.get(st.url + f"/api/sources/{name}").json()
    assert src["source"] == name and [p["group_id"] for p in src["points"]] == [gid]
    assert src["points"][0]["image_id"] == restored["id"] and (src["points"][0]["x"], src["points"][0]["y"]) == phot[name]
    assert httpx.get(st.url + "/api/sources/no-such-source").status_code == 404
    page = httpx.get(st.url + f"/source/{name}")
    assert page.status_code == 200 and "/static/source.js" in page.text


def test_flag_waterfall_bins_the_stored_flags(web):
    import numpy as np
    import zarr

    st, groups, _ = web
    gid = groups[0].group_id
    ptc = np.asarray(zarr.open_group(str(st.svc.root / "products" / gid / "flags.zarr"), mode="r")
                     ["per_time_channel"][...], float)
    got = np.array(httpx.get(st.url + f"/api/groups/{gid}/flag_waterfall?bins=16").json()["flagged"])
    assert got.shape == (ptc.shape[0], 16)
    per = ptc.shape[1] // 16
    np.testing.assert_allclose(got, ptc.reshape(ptc.shape[0], 16, per).mean(axis=2), atol=1e-4)
    full = np.array(httpx.get(st.url + f"/api/groups/{gid}/flag_waterfall").json()["flagged"])
    np.testing.assert_allclose(full, ptc, atol=1e-4)  # fewer channels than bins: one per channel
    assert httpx.get(st.url + "/api/groups/2001-01-01T00:00:00/flag_waterfall").status_code == 404


def test_page_and_plotting_library_come_from_the_package(web):
    from pathlib import Path

    import contimg.web

    st, _, _ = web
    page = httpx.get(st.url + "/").text
    scripts = re.findall(r'<script src="([^"]+)"', page) + re.findall(r'<link rel="stylesheet" href="([^"]+)"', page)
    assert "/static/vendor/uPlot-1.6.32.iife.min.js" in scripts
    vendor = Path(contimg.web.__file__).parent / "static" / "vendor"
    for src in scripts:
        assert src.startswith("/static/"), src  # nothing from another host (no CDN)
        r = httpx.get(st.url + src)
        assert r.status_code == 200, src
        if "/vendor/" in src:
            assert r.content == (vendor / src.rsplit("/", 1)[1]).read_bytes()
    assert (vendor / "uPlot-LICENSE.txt").read_text().startswith("The MIT License")
    assert "1.6.32" in (vendor / "VENDORED.md").read_text()
    for bad in ("/static/vendor/VENDORED.md", "/static/vendor/..%2F..%2Fapp.py", "/static/vendor/nope.js"):
        assert httpx.get(st.url + bad).status_code in (404, 422), bad


def test_the_sky_the_pipeline_learns(web):
    """/api/catalogue, /api/mosaics and /api/candidates say what the products database holds
    (read here with sqlite3): the sources the after-group hook found in the group's image, each
    with its forced photometry; the running span mosaic (no FITS until it completes: 404); an
    operator's verdict on a transient candidate needs the token and is kept."""
    import sqlite3
    from urllib.parse import quote

    from contimg.state.catalogue import CatalogueDB

    st, groups, _ = web
    db_path = st.svc.root / "state" / "products.sqlite3"
    with sqlite3.connect(db_path) as db:
        names = {r[0] for r in db.execute("SELECT name FROM catalogue_sources")}
        mosaic_names = {r[0] for r in db.execute("SELECT name FROM mosaics")}
    cat = httpx.get(st.url + "/api/catalogue").json()
    assert names and {s["name"] for s in cat} == names
    name = sorted(names)[0]
    one = httpx.get(st.url + f"/api/catalogue/{quote(name)}").json()
    with sqlite3.connect(db_path) as db:
        fluxes = [r[0] for r in db.execute("SELECT flux_jy FROM forced_photometry WHERE source = ? AND kind = 'group' "
                                           "ORDER BY mid_mjd", [name])]
    assert one["source"]["name"] == name and [r["flux_jy"] for r in one["lightcurve"]] == pytest.approx(fluxes)
    assert httpx.get(st.url + "/api/catalogue/nothing-here").status_code == 404
    mos = httpx.get(st.url + "/api/mosaics").json()
    assert mosaic_names and {m["name"] for m in mos} == mosaic_names
    running = [m for m in mos if m["status"] == "running"]
    assert running and running[0]["files"] == {}
    assert httpx.get(st.url + f"/api/mosaics/{quote(running[0]['name'])}/image.fits").status_code == 404
    cid = f"{groups[0].group_id}#999"
    cdb = CatalogueDB(db_path)
    try:
        cdb.record_candidate({"id": cid, "image": groups[0].group_id, "mid_mjd": 0.0, "ra_deg": 1.0, "dec_deg": 2.0,
                              "flux_jy": 0.1, "err_jy": 0.01, "snr": 10.0, "pb": 0.5, "prior": [],
                              "min_rise_sigma": 6.0, "cutout_path": "", "source": ""})
    finally:
        cdb.close()
    url = st.url + f"/api/candidates/{quote(cid, safe='')}"
    assert httpx.post(url, json={"verdict": "real"}).status_code == 401
    r = httpx.post(url, json={"verdict": "real", "by": "operator", "note": "seen by eye"},
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["status"] == "real"
    assert httpx.post(url, json={"verdict": "maybe"}, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 422
    real = httpx.get(st.url + "/api/candidates", params={"status": "real"}).json()["transients"]
    assert [c["id"] for c in real] == [cid] and real[0]["marked_by"] == "operator"

"""The web view's REST API and WebSockets against a real service (uvicorn on the service's loop)."""

from __future__ import annotations

import asyncio
import json
import os
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
    assert s["backend"] == "cpu" and s["queue"]["completed"] == 1 and s["mode"] == "serve"
    assert {t["task"] for t in s["tasks"]} >= {"scheduler", "reader", "processor", "writer", "web", "watcher"}
    spec = httpx.get(st.url + "/api/openapi.json").json()
    for path in ("/api/status", "/api/groups", "/api/groups/{group_id}", "/api/ms_index", "/api/images",
                 "/api/images/{image_id}", "/api/caltables", "/api/qa", "/api/alerts", "/api/metrics",
                 "/api/reprocess/{group_id}"):
        assert path in spec["paths"], path
    for model in ("StatusOut", "GroupOut", "GroupDetail", "ImageOut", "CalTableOut", "QAOut", "AlertOut",
                  "ReprocessOut", "FlagsOut", "GainsOut"):
        assert model in spec["components"]["schemas"], model


def test_groups_images_and_files(web):
    st, groups, _ = web
    gid = groups[0].group_id
    rows = httpx.get(st.url + "/api/groups").json()
    assert [g["group_id"] for g in rows] == [gid] and rows[0]["state"] == "completed"
    d = httpx.get(st.url + f"/api/groups/{gid}").json()
    assert len(d["files"]) == 16 and {t["stage"] for t in d["timings"]} >= {"read", "flag", "calibrate", "image"}
    assert httpx.get(st.url + "/api/groups/2001-01-01T00:00:00").status_code == 404
    bad = httpx.get(st.url + "/api/groups/not-a-group")
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
            await ws.send(json.dumps({"select": "ant:x"}))
            err = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert err["type"] == "error" and "ant:x" in err["message"]

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

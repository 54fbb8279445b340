"""QA against the simulator's truth: cross-match, forced photometry and a variable source's light
curve over 8 groups; a deliberately broken calibration; alerts, their rate limit and webhook."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest

from contimg.config import load_config
from contimg.state.products import ProductsDB

LIGHT_CURVE_JY = [0.2, 0.35, 0.5, 0.25, 0.6, 0.3, 0.45, 0.2]


def _config(catalogue: Path, **over):
    # 8 short groups 75 s apart (the variable source stays in the beam), no RFI: this checks QA,
    # not the flagger; the calibrator transits in the first group
    base = {"simulate": {"n_times": 5, "group_interval_s": 75.0, "calibrator_group": 0, "n_faint_sources": 10,
                         "rfi": False, "variable_flux_jy": LIGHT_CURVE_JY},
            "image": {"npix": 1024, "niter": 5000, "products": ["restored", "pbcor"]},
            "sky": {"catalogue": str(catalogue)}}
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value}
    return load_config("test", use_env=False, overrides=base)


@pytest.fixture(scope="module")
def lc_run(tmp_path_factory):
    """8 simulated groups with a variable source, run in batch with the truth as catalogue."""
    from contimg.service.batch import run_batch
    from contimg.sim import simulate

    base = tmp_path_factory.mktemp("qa")
    sim = base / "in"
    cfg = _config(sim / "catalogue.csv")
    groups = simulate(sim, n_groups=len(LIGHT_CURVE_JY), cfg=cfg.simulate)
    results, code = run_batch(sim, root=base / "root", cfg=cfg)
    assert code == 0, [r.error for r in results]
    return {"sim": sim, "root": base / "root", "groups": groups, "results": results, "cfg": cfg}


def test_lightcurve_recovers_injected_fluxes(lc_run):
    db = ProductsDB(lc_run["root"] / "state" / "products.sqlite3")
    points = db.lightcurve("var000")
    db.close()
    order = [g.group_id for g in lc_run["groups"]]
    with h5py.File(lc_run["sim"] / "truth.h5") as truth:
        injected = truth["variable/flux_jy"][:]
    assert len(points) >= 4  # the groups where the source is inside the averaged beam's min_pb
    for p in points:
        true = injected[order.index(p["group_id"])]  # flat spectrum: the same at the image frequency
        assert abs(p["flux_jy"] - true) <= 3 * p["err_jy"], (p["group_id"], p["flux_jy"], true, p["err_jy"])


def test_only_the_variable_source_is_a_candidate(lc_run):
    db = ProductsDB(lc_run["root"] / "state" / "products.sqlite3")
    rows = list(db.db["variables"].rows)
    alerts = list(db.db["alerts"].rows_where("category = 'variability'"))
    db.close()
    candidates = {r["source"] for r in rows if r["candidate"]}
    assert candidates == {"var000"}
    constant = [r for r in rows if r["source"] != "var000" and r["n"] >= lc_run["cfg"].photometry.min_points]
    assert len(constant) >= 10  # enough constant sources measured often enough to mean something
    assert [a["message"].split()[0] for a in alerts] == ["var000"]


def test_crossmatch_against_the_truth_catalogue(lc_run):
    """Every image: positions (through astropy's WCS) within 0.1 beam of the truth, flux scale
    within 2 % of 1, and the image gate passes."""
    for r in lc_run["results"]:
        image = r.gates["image"]
        m = image["metrics"]
        assert image["passed"], image["reasons"]
        assert m["n_used"] >= 5
        assert m["median_offset_beam"] < 0.1 and m["systematic_offset_beam"] < 0.1, m
        assert abs(m["flux_ratio"] - 1) < 0.02, m
        assert {"read", "flag", "calibrate", "image"} <= set(r.gates) and all(g["passed"] for g in r.gates.values())


def test_lightcurve_command_and_artifacts(lc_run, tmp_path):
    from contimg.cli import main

    assert main(["lightcurve", "var000", "--root", str(lc_run["root"]), "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "var000.csv").read_text().splitlines()
    db = ProductsDB(lc_run["root"] / "state" / "products.sqlite3")
    assert len(lines) == 1 + len(db.lightcurve("var000"))
    arts = list(db.db["qa_artifacts"].rows)
    db.close()
    assert (tmp_path / "var000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["lightcurve", "no-such-source", "--root", str(lc_run["root"]), "--out", str(tmp_path)]) == 2
    kinds = {a["kind"] for a in arts}
    assert kinds == {"flags", "uv_coverage", "bandpass", "gain_phase", "thumbnail"}
    assert all(Path(a["path"]).read_bytes()[:4] == b"\x89PNG" for a in arts)


def test_qa_api(lc_run):
    from webutil import ServiceThread

    cfg = lc_run["cfg"].model_validate({**lc_run["cfg"].model_dump(), "web": {"port": 0}})
    st = ServiceThread(lc_run["root"], cfg).start()
    try:
        gid = lc_run["groups"][0].group_id
        qa = httpx.get(st.url + "/api/qa").json()
        assert len(qa) == len(LIGHT_CURVE_JY) and all(q["qa_passed"] for q in qa)
        assert [g["stage"] for g in qa[0]["gates"]] == ["read", "flag", "calibrate", "image"]
        detail = httpx.get(st.url + f"/api/qa/{gid}").json()
        assert detail["n_detections"] > 0 and detail["photometry"]
        for art in detail["artifacts"]:
            assert httpx.get(st.url + art["url"]).content[:4] == b"\x89PNG"
        var = httpx.get(st.url + "/api/variables", params={"candidates_only": True}).json()
        assert [v["source"] for v in var] == ["var000"]
        curve = httpx.get(st.url + "/api/lightcurves/var000").json()
        assert curve["stats"]["candidate"] and len(curve["points"]) == curve["stats"]["n"]
        assert httpx.get(st.url + "/api/lightcurves/nothing-here").status_code == 404
        assert httpx.get(st.url + "/api/lightcurves/a;b").status_code == 422
        assert httpx.get(st.url + "/api/qa/2000-01-01T00:00:00").status_code == 404
    finally:
        assert st.stop() == 0


def test_broken_calibration_fails_the_image_gate_with_one_alert(lc_run, tmp_path):
    """Two groups without a calibrator get a stored solution with scrambled phases: both images
    fail their gate, the products are still written, and the rate limit (1 per category) lets
    exactly one alert of each category through."""
    from contimg.calibrate.registry import registration_row
    from contimg.state.calregistry import CalRegistry
    from contimg.service.batch import run_batch
    from contimg.calibrate.storage import load_solution, save_solution

    good = load_solution(next((lc_run["root"] / "cal").glob("*.zarr")))
    rng = np.random.default_rng(7)
    broken = good.__class__(**{**good.__dict__, "gains": (good.gains * np.exp(
        1j * rng.uniform(-np.pi, np.pi, good.gains.shape[:1] + (1,) + good.gains.shape[2:]))).astype(np.complex64),
        "group_id": "broken"})
    root = tmp_path / "root"
    path = save_solution(root / "cal" / "broken.zarr", broken)
    reg = CalRegistry(root / "state" / "cal_registry.sqlite3")  # registered active: its phases pass its own gate
    reg.register(registration_row(sol=broken, path=path, cal_type="bandpass", validity_h=24.0, passed=True,
                                  params={}, quality={}))
    reg.close()
    src = tmp_path / "in"
    src.mkdir()
    for g in lc_run["groups"][3:5]:
        for p in g.files:
            shutil.copy(p, src / Path(p).name)
    cfg = _config(lc_run["sim"] / "catalogue.csv", alerts={"max_per_category": 1})
    results, code = run_batch(src, root=root, cfg=cfg)
    assert code == 0 and [r.status for r in results] == ["completed", "completed"]
    for r in results:
        assert r.cal_applied  # the stored (broken) solution was applied
        assert not r.gates["image"]["passed"] and not r.qa_passed
        assert any(Path(p).is_file() for p in r.products)
    db = ProductsDB(root / "state" / "products.sqlite3")
    alerts = list(db.db["alerts"].rows)
    phot = list(db.db["photometry"].rows)
    db.close()
    categories = [a["category"] for a in alerts]
    assert categories.count("qa_image") == 1, categories
    assert len(categories) == len(set(categories)), categories
    assert phot == []  # a failed image gate measures nothing for the light curves


def test_alert_rate_limit_and_dedup():
    from contimg.config import AlertsConfig
    from contimg.qa.alerts import AlertManager

    now = [0.0]
    sent = []
    mgr = AlertManager(AlertsConfig(max_per_category=10, window_s=300, dedup_s=300), publish=sent.append,
                       clock=lambda: now[0])
    results = [mgr.raise_alert("warning", "qa_image", f"group {k} failed") for k in range(25)]
    assert sum(results) == 10 and len(sent) == 10 and mgr.suppressed["qa_image"] == 15
    assert mgr.raise_alert("warning", "disk_space", "low") and not mgr.raise_alert("warning", "disk_space", "low")
    now[0] = 301.0  # a new window: sent again, with the count of what was held back
    assert mgr.raise_alert("warning", "qa_image", "group 99 failed")
    assert "+15 similar held back" in sent[-1].message
    with pytest.raises(ValueError, match="severity"):
        mgr.raise_alert("loud", "x", "y")


def test_alert_webhook_posts_slack_json():
    from contimg.config import AlertsConfig
    from contimg.qa.alerts import AlertManager

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    mgr = AlertManager(AlertsConfig(webhook_url=f"http://127.0.0.1:{server.server_port}/hook"),
                       publish=lambda a: None)
    assert mgr.raise_alert("info", "variability", "sent, but below the webhook's severity")
    assert mgr.raise_alert("critical", "disk_space", "1% free")
    thread.join(10)
    server.server_close()
    assert len(received) == 1 and received[0]["text"].startswith("[contimg critical] disk_space")
    assert received[0]["severity"] == "critical"


def test_calibration_gate_metrics_against_known_scatter():
    """Gains with a delay, a smooth ripple and known phase/amplitude noise: the gate's phase
    scatter and bandpass roughness recover the noise put in."""
    from contimg.qa.gates import bandpass_roughness, phase_scatter_deg

    rng = np.random.default_rng(3)
    nant, nchan, npol = 40, 512, 2
    freq = np.linspace(1.31e9, 1.50e9, nchan)
    x = (freq - freq.mean()) / np.ptp(freq)
    smooth = (1 + 0.05 * np.sin(2 * np.pi * x / 0.5))[None, :, None]
    phase = rng.uniform(-3, 3, (nant, 1, npol)) * x[None, :, None] + rng.uniform(-np.pi, np.pi, (nant, 1, npol))
    sigma_phase, sigma_amp = np.radians(2.0), 0.01
    gains = (smooth * (1 + sigma_amp * rng.standard_normal((nant, nchan, npol)))
             * np.exp(1j * (phase + sigma_phase * rng.standard_normal((nant, nchan, npol)))))
    flags = np.zeros(gains.shape, bool)
    scatter = np.median(phase_scatter_deg(gains=gains, flags=flags, freq_hz=freq))
    rough = np.median(bandpass_roughness(gains=gains, flags=flags))
    assert scatter == pytest.approx(2.0, rel=0.05)
    assert rough == pytest.approx(sigma_amp, rel=0.1)


def test_catalogue_errors_name_the_file(tmp_path):
    from contimg.sky.catalogue import load_catalogue

    bad = tmp_path / "cat.csv"
    bad.write_text("name,ra_deg,dec_deg,flux_jy\nA,10,20,1\n")
    with pytest.raises(ValueError, match=f"{bad}.*spectral_index"):
        load_catalogue(bad)
    bad.write_text("name,ra_deg,dec_deg,flux_jy,spectral_index,ref_freq_hz\nA,10,x,1,0,1.4e9\n")
    with pytest.raises(ValueError, match=f"{bad}.*not a number"):
        load_catalogue(bad)
    assert len(load_catalogue("")) > 100  # the VLA calibrator list


def test_island_peaks_equal_scipy():
    from scipy import ndimage

    from contimg.qa.sources import island_peaks

    rng = np.random.default_rng(8)
    image = ndimage.gaussian_filter(rng.normal(size=(300, 260)), 3)
    labels, n = ndimage.label(image > 0.05)
    peaks, ys, xs = island_peaks(image, labels, n)
    index = np.arange(1, n + 1)
    np.testing.assert_array_equal(peaks, ndimage.maximum(image, labels, index))
    assert list(zip(ys.tolist(), xs.tolist())) == [tuple(p) for p in ndimage.maximum_position(image, labels, index)]


def test_rms_map_equals_astropy_mad_std_per_tile():
    """The local RMS map (numba, tiles in parallel) is astropy's `mad_std` of each tile's finite
    pixels, spread over the tile; NaN where a tile has none (edge tiles are partial)."""
    from astropy.stats import mad_std

    from contimg.qa.sources import rms_map

    rng = np.random.default_rng(9)
    residual = rng.normal(0, 1e-3, (130, 95)) * np.linspace(1, 3, 95)[None, :]
    residual[:20, :40] = np.nan  # two whole tiles and part of others
    residual[50:53, 60:70] = np.nan
    got = rms_map(residual=residual, tile=20)
    assert got.shape == residual.shape and got.dtype == np.float32
    for i in range(0, 130, 20):
        for j in range(0, 95, 20):
            block = residual[i:i + 20, j:j + 20]
            finite = block[np.isfinite(block)]
            expected = mad_std(finite) if finite.size else np.nan
            np.testing.assert_allclose(got[i:i + 20, j:j + 20], expected, rtol=1e-6)


def test_the_read_gates_zero_and_non_finite_fractions_equal_numpys():
    """The one-pass counter against numpy's own comparisons on the cross-correlations: zeros,
    NaN and infinities in either part, on cross and auto rows (autos must not count), a
    non-contiguous view (a reader's polarization slice)."""
    from contimg.qa.gates import zero_fraction

    rng = np.random.default_rng(3)
    full = (rng.normal(size=(5, 12, 16, 4)) + 1j * rng.normal(size=(5, 12, 16, 4))).astype(np.complex64)
    pick = rng.random(full.shape)
    full[pick < 0.05] = 0
    full.real[(pick > 0.05) & (pick < 0.08)] = np.nan
    full.imag[(pick > 0.08) & (pick < 0.10)] = np.inf
    full.imag[(pick > 0.10) & (pick < 0.12)] = 0  # only the imaginary part zero: not a zero sample
    vis = full[..., ::2]
    cross = np.ones(12, bool)
    cross[[0, 5, 7]] = False
    v = vis[:, cross]
    want = (np.sum(v == 0) / v.size, np.sum(~np.isfinite(v)) / v.size)
    assert zero_fraction(vis=vis, cross=cross) == pytest.approx(want, rel=1e-12)
    assert want[0] > 0.03 and want[1] > 0.03  # the case has both
    assert zero_fraction(vis=vis, cross=np.zeros(12, bool)) == (0.0, 0.0)


def test_a_thumbnail_is_the_documented_stretch_north_up(tmp_path):
    """render_png: 0.5th to 99.9th percentile of the finite pixels, asinh(10 s) / asinh(10) to
    0..255, FITS row 0 at the bottom, NaN as the low end; against the formula in float64."""
    from PIL import Image

    from contimg.io.thumbs import render_png

    ny, nx = 64, 48
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = (yy + xx / 100.0).astype(np.float32)
    image[5, 7] = 500.0  # one bright pixel, above the 99.9th percentile
    image[:3, :4] = np.nan
    png = np.asarray(Image.open(render_png(image, tmp_path / "t.png", size=512)), int)
    data = image.astype(np.float64)
    lo, hi = np.percentile(data[np.isfinite(data)], [0.5, 99.9])
    s = np.clip((np.where(np.isfinite(data), data, lo) - lo) / (hi - lo), 0, 1)
    expected = np.floor(255 * np.arcsinh(10 * s) / np.arcsinh(10))[::-1]
    assert png.shape == (ny, nx)
    assert np.max(np.abs(png - expected)) <= 1
    assert png[0].min() > png[-1].max()  # the top row of the PNG is the last FITS row (north up)
    assert png[ny - 1 - 5, 7] == 255 and png[-1, 0] == 0  # the bright pixel saturates; NaN is the low end

"""The page in a real headless Chromium (Debian's chromium, driven by Playwright), during a replay:
empty states first; the waterfall's rows grow group by group with time and frequency axes and the
flagger's flags in red where flags.zarr says so, hover values, a second page's one-antenna Stokes I
selection filling too, and a full hour of groups drawn fast enough; gains and flags plots with
axes and hover values; the replay
feeder shown as finished, not as an error; the image viewer's cursor reads the FITS pixel (and
RA/Dec) of a catalogue source as astropy reads them; a source page with its light curve, η and
cut-outs; the strip mosaic panel following the groups (tests/test_web_sky.py has the rest of the strip
and the pipeline's own catalogue); a phone-width page without sideways scrolling; the page carries on by itself after the
service restarts. Screenshots go to tests/artifacts/ (or $CONTIMG_TEST_ARTIFACTS); with
CONTIMG_WRITE_DOC_IMAGES=1 they also replace docs/images/ (the README's and the operator's
guide's pictures)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from webutil import ServiceThread

from contimg.config import load_config

ARTIFACTS = Path(os.environ.get("CONTIMG_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
DOC_IMAGES = Path(__file__).parent.parent / "docs" / "images"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CONTIMG_SKIP_BROWSER") == "1":
        pytest.skip("CONTIMG_SKIP_BROWSER=1 and no Chromium")
    pytest.fail("no Chromium: install Debian's chromium (tools/install.sh does) or set CONTIMG_SKIP_BROWSER=1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shot(page, name: str, *, doc: bool = False, **kw) -> None:
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **kw)
    if doc and os.environ.get("CONTIMG_WRITE_DOC_IMAGES") == "1":
        shutil.copy(path, DOC_IMAGES / name)


class ReplayServiceThread(ServiceThread):
    """The service with a replay feeder beside its tasks (as `contimg replay` runs one: the task
    ``replay_feeder``), delivering the groups' files into incoming/ at ``speed``× their cadence."""

    def __init__(self, root: Path, cfg, files, *, speed: float):
        super().__init__(root, cfg)
        self.files, self.speed = files, speed
        self.go = None

    def _main(self) -> None:
        from contimg.io.naming import subband_name
        from contimg.service.batch import _deliver, replay_schedule

        svc, incoming = self.svc, self.svc.root / "incoming"

        async def feeder():
            await self.go.wait()  # the test says when
            loop = asyncio.get_running_loop()
            start = loop.time()
            for due, f in replay_schedule(self.files, speed=self.speed):
                await asyncio.sleep(max(0.0, start + due - loop.time()))
                await svc.workers["misc"].run(_deliver, f.path, incoming, f.path.name,
                                              subband_name(f.timestamp, f.subband, incomplete=True))

        try:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self.go = asyncio.Event()
            self.code = self.loop.run_until_complete(svc.run(replay_feeder=feeder))
        except BaseException as exc:  # noqa: BLE001 - reported by start()/stop()
            self.error = exc

    def start_feeding(self) -> None:
        self.loop.call_soon_threadsafe(self.go.set)


def _axes_ok(page, element_id: str, *units: str) -> list[dict]:
    """The plot's axes have tick labels and their titles carry ``units``."""
    axes = page.evaluate(f"plotAxes('{element_id}')")
    assert axes and len(axes) == 2, (element_id, axes)
    for ax, unit in zip(axes, units):
        assert unit in ax["label"], (element_id, ax)
        assert len([t for t in ax["ticks"] if t.strip()]) >= 3, (element_id, ax)
    return axes


def _binned(ptc: np.ndarray, nbins: int) -> np.ndarray:
    edges = np.linspace(0, ptc.shape[1], min(nbins, ptc.shape[1]) + 1).astype(int)
    return np.add.reduceat(ptc, edges[:-1], axis=1) / np.diff(edges)[None, :]


def test_live_page_during_a_replay(tmp_path, sim_dir):
    import zarr
    from astropy.io import fits
    from astropy.wcs import WCS
    from playwright.sync_api import expect, sync_playwright

    from contimg.io.naming import group_files, scan_folder
    from contimg.state.products import ProductsDB

    chromium = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cfg = load_config("test", use_env=False, overrides={
        "image": {"npix": 256, "cell_arcsec": 20.0, "niter": 50, "products": ["restored"]},
        "sky": {"catalogue": str(sim_dir / "catalogue.csv")},
        "web": {"port": _free_port()}, "service": {"settle_s": 0.2, "poll_interval_s": 0.2}})
    files = scan_folder(sim_dir)
    groups = group_files(files, tolerance_s=60)
    root = tmp_path / "root"
    (root / "incoming").mkdir(parents=True)
    svc = ReplayServiceThread(root, cfg, files, speed=100.0).start()  # a group every ~3 s
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(svc.url + "/")
            expect(page.locator("#conn")).to_have_text("live", timeout=20_000)

            # ---- before any data: each panel says what it waits for
            for empty, words in (("#wf-empty", "Waiting for data"), ("#cal-empty", "No calibration solution yet"),
                                 ("#flag-empty", "No flagged group yet"), ("#images-empty", "No image yet"),
                                 ("#qa-empty", "No completed group yet"), ("#queue-empty", "No group yet"),
                                 ("#mosaic-empty", "No mosaic yet"),
                                 ("#own-empty", "No source of the pipeline's own catalogue yet")):
                expect(page.locator(empty)).to_be_visible()
                expect(page.locator(empty)).to_contain_text(words)
            expect(page.locator("#waterfall")).to_be_hidden()
            _shot(page, "page-empty.png", full_page=True)

            # ---- the replay: the waterfall's rows grow group by group
            page.evaluate("""() => { window.rowHistory = [];
                new MutationObserver(() => window.rowHistory.push(+document.getElementById('waterfall').dataset.rows))
                  .observe(document.getElementById('waterfall'), {attributes: true, attributeFilter: ['data-rows']}); }""")
            antenna = browser.new_page(viewport={"width": 1000, "height": 800})  # a second page: one antenna, Stokes I
            antenna.goto(svc.url + "/")
            expect(antenna.locator("#waterfall")).to_have_attribute("data-select", "avg XX", timeout=20_000)
            antenna.select_option("#wf-mode", "ant")
            antenna.fill("#wf-ant", "24")
            antenna.select_option("#wf-pol", "I")
            antenna.click("#wf-apply")
            expect(antenna.locator("#waterfall")).to_have_attribute("data-select", "ant:24 I")
            svc.start_feeding()
            expect(page.locator("#waterfall")).to_have_attribute("data-rows", "24", timeout=60_000)
            expect(page.locator("#wf-empty")).to_be_hidden()
            _axes_ok(page, "waterfall", "time (UTC)", "frequency (MHz)")
            expect(page.locator("#waterfall")).to_have_attribute("data-rows", "48", timeout=90_000)
            history = [n for n in page.evaluate("window.rowHistory") if n]
            assert 24 in history and 48 in history and history == sorted(history), history
            expect(page.locator("#waterfall")).to_have_attribute("data-groups", "2")

            expect(antenna.locator("#waterfall")).to_have_attribute("data-rows", "48", timeout=60_000)
            expect(antenna.locator("#wf-info")).to_contain_text("ant:24 I · 2 group(s), 48 integrations")
            antenna.close()

            row1 = page.locator(f'#queue tr[data-group="{groups[1].group_id}"]')
            expect(row1).to_have_attribute("data-state", "completed", timeout=180_000)

            # ---- flags over the waterfall: red where the flagger flagged (flags.zarr), not elsewhere
            ev = svc.svc.last_waterfall[("avg", "XX")]
            assert ev.group_id == groups[1].group_id
            ptc = np.asarray(zarr.open_group(str(root / "products" / ev.group_id / "flags.zarr"), mode="r")
                             ["per_time_channel"][...], float)
            truth = _binned(ptc, len(ev.freq_mhz))
            assert truth.shape == (len(ev.time_mjd), len(ev.freq_mhz))
            page.wait_for_function("() => WF.blocks.every((b) => b.flagger !== null)", timeout=30_000)
            flagged = np.argwhere(truth >= 0.95)
            clean = np.argwhere(truth < 0.02)  # next to nothing flagged: the data colour shows
            assert len(flagged) and len(clean)
            for (t, b), want_red in [(flagged[len(flagged) // 2], True), (flagged[0], True),
                                     (clean[len(clean) // 2], False), (clean[0], False)]:
                rgb = page.evaluate(f"wfProbe({ev.time_mjd[t]!r}, {ev.freq_mhz[b]!r})")["rgb"]
                is_red = rgb[0] > 200 and rgb[1] < 110 and rgb[2] < 110
                assert is_red == want_red, (t, b, truth[t, b], rgb)
            # the colour bar's ticks are in the data's (raw) units, said so; hovering gives a cell's values
            expect(page.locator(".cb small")).to_contain_text("raw correlator units")
            t, b = flagged[len(flagged) // 2]
            probe = page.evaluate(f"wfProbe({ev.time_mjd[t]!r}, {ev.freq_mhz[b]!r})")
            box = page.locator("#waterfall canvas").first.bounding_box()
            page.mouse.move(box["x"] + probe["x"], box["y"] + probe["y"])
            hover = page.locator("#wf-hover")
            expect(hover).to_contain_text(f"{ev.freq_mhz[b]:.3f} MHz")
            expect(hover).to_contain_text(f"flagged {100 * truth[t, b]:.1f} % by the flagger")

            # ---- gains and flags: plots with axes and units
            expect(page.locator("#cal-info")).to_contain_text("1156+314", timeout=30_000)
            _axes_ok(page, "bandpass", "frequency (MHz)", "|gain|")
            _axes_ok(page, "phase", "frequency (MHz)", "phase (deg)")
            # the legend gives the values under the cursor: the plot may be redrawn with the group's
            # solution just after the first hover (the legend then shows "–" until the cursor moves
            # again), so the cursor moves across the plot until the legend reads numbers
            over = page.locator("#bandpass .u-over")
            legend = page.locator("#bandpass .u-legend .u-value")
            box = over.bounding_box()
            for k in range(10):
                over.hover(position={"x": box["width"] * (0.3 + 0.04 * k), "y": box["height"] / 2})
                values = legend.all_text_contents()
                if len(values) == 3 and all(re.match(r"^-?[\d.]+", v) for v in values):
                    break
                page.wait_for_timeout(300)
            assert len(values) == 3 and all(re.match(r"^-?[\d.]+", v) for v in values), values
            expect(page.locator("#flag-info")).to_contain_text(groups[1].group_id, timeout=30_000)
            _axes_ok(page, "flag-ant", "antenna", "flagged (%)")
            _axes_ok(page, "flag-chan", "channel", "flagged (%)")
            for e in ("#cal-empty", "#flag-empty", "#images-empty", "#qa-empty"):
                expect(page.locator(e)).to_be_hidden()

            # ---- the replay feeder finished: named as such, not a red "stopped"
            feeder = page.locator('#tasks tr[data-task="replay_feeder"]')
            expect(feeder).to_contain_text("replay feeder", timeout=20_000)
            expect(feeder.locator(".pill")).to_have_text("finished")
            assert "bad" not in feeder.locator(".pill").get_attribute("class")
            expect(page.locator('#tasks tr[data-task="reader"] .pill')).to_have_text("running")
            # each stage's backend and why (no device here: the CPU, unchecked)
            expect(page.locator("#backends tr")).to_have_count(3)
            expect(page.locator('#backends tr[data-stage="flag"]')).to_contain_text("no CUDA device")

            expect(page.locator("#images figure")).to_have_count(2, timeout=30_000)
            expect(page.locator("#images img").first).to_have_js_property("complete", True)
            assert page.locator("#images img").first.evaluate("img => img.naturalWidth") == 256  # 512 asked, the image is 256²
            expect(page.locator("#qa tbody tr")).to_have_count(2, timeout=30_000)
            # the strip panel follows the groups: the running span's mosaic, with both groups once the
            # second group's catalogue and mosaic update has run (the page looks again after "completed")
            strip = page.locator("#mosaics tbody tr")
            expect(strip).to_have_count(1, timeout=60_000)
            expect(strip.first).to_have_attribute("data-status", "running")
            expect(strip.first.locator("td").nth(2)).to_have_text("2", timeout=60_000)
            expect(page.locator("#mosaic-empty")).to_be_hidden()
            expect(page.locator("#variables tbody tr").first).to_be_visible(timeout=30_000)
            page.wait_for_timeout(1500)  # the status panel's next refresh (at most one a second)
            page.evaluate("window.scrollTo(0, 0)")
            box = page.locator("#waterfall canvas").first.bounding_box()
            page.mouse.move(box["x"] + probe["x"], box["y"] + probe["y"])  # the hover line, for the pictures
            expect(hover).to_contain_text("MHz")
            _shot(page, "web-view.png", doc=True, full_page=True)
            _shot(page, "web-waterfall.png", doc=True, clip=page.locator("#waterfall-panel").bounding_box())

            # ---- the image viewer: the cursor on a catalogue source reads its FITS pixel and position
            products = ProductsDB(root / "state" / "products.sqlite3")
            try:
                image = products.image_rows(group_id=groups[1].group_id, image_type="restored")[0]
                in_both = {p["source"] for p in products.photometry(groups[0].group_id)}
                phot = max((p for p in products.photometry(groups[1].group_id) if p["source"] in in_both),
                           key=lambda p: p["flux_jy"])  # the brightest source measured in both groups
                stats = products.variable(phot["source"])
            finally:
                products.close()
            with fits.open(image["path"]) as hdul:
                data = np.squeeze(hdul[0].data)
                wcs = WCS(hdul[0].header).celestial
            x, y = (int(round(float(v))) for v in wcs.world_to_pixel_values(phot["ra_deg"], phot["dec_deg"]))
            page.locator(f'#images figure[data-id="{image["id"]}"]').click()
            expect(page.locator("#viewer")).to_be_visible()
            expect(page.locator("#v-canvas")).to_have_attribute("data-ready", "1", timeout=30_000)
            page.locator("#v-in").click()
            page.locator("#v-in").click()  # 4× the fitted scale: each image pixel is several screen pixels
            page.evaluate(f"""() => {{ const c = document.getElementById('v-canvas'), [cx, cy] = imageToCanvas({x}, {y});
                VIEW.ox += c.width / 2 - cx; VIEW.oy += c.height / 2 - cy; viewerDraw(); }}""")  # centre the source
            sx, sy = page.evaluate(f"viewerScreenOf({x}, {y})")
            page.mouse.move(sx, sy)
            readout = page.locator("#v-readout")
            expect(readout).to_have_attribute("data-x", str(x))
            expect(readout).to_have_attribute("data-y", str(y))
            value = float(readout.get_attribute("data-value"))
            assert value == pytest.approx(float(data[y, x]), rel=1e-6)
            assert value > 10 * image["noise_jy"]  # a source, not noise
            text = readout.text_content()
            shown = re.search(r"· ([\-\d.e]+) Jy/beam", text)
            assert shown and float(shown.group(1)) == pytest.approx(float(data[y, x]), rel=1e-4), text
            ra, dec = (float(v) for v in wcs.pixel_to_world_values(x, y))
            got = re.search(r"\(([\d.]+)°, ([\-\d.]+)°\)", text)
            assert abs(float(got.group(1)) - ra) < 2e-4 and abs(float(got.group(2)) - dec) < 2e-4, (text, ra, dec)
            assert phot["source"] in text  # the catalogue overlay names the source under the cursor
            expect(page.locator("#v-legend")).to_contain_text("catalogue sources")
            page.locator("#v-fit").click()  # the whole image, the cursor on the same source
            page.mouse.move(*page.evaluate(f"viewerScreenOf({x}, {y})"))
            expect(readout).to_have_attribute("data-x", str(x))
            _shot(page, "web-viewer.png", doc=True)
            page.locator("#v-close").click()

            # ---- the source page: light curve with error bars, η and V, cut-outs
            page.goto(svc.url + f"/source/{phot['source']}")
            expect(page.locator("#lightcurve")).to_have_attribute("data-points", "2", timeout=20_000)
            _axes_ok(page, "lightcurve", "UTC", "flux density (mJy)")
            expect(page.locator("#cutouts")).to_have_attribute("data-count", "2", timeout=20_000)
            assert stats is not None and stats["n"] == 2
            expect(page.locator("#src-stats")).to_contain_text(f"{stats['eta']:.2f}")
            expect(page.locator("#src-stats")).to_contain_text(f"{stats['v']:.3f}")
            _shot(page, "web-source.png", doc=True, full_page=True)

            # ---- a phone: no sideways scrolling, the waterfall inside the screen
            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            phone.goto(svc.url + "/")
            expect(phone.locator("#waterfall")).to_have_attribute("data-rows", "48", timeout=20_000)
            phone.wait_for_timeout(500)
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            box = phone.locator("#waterfall canvas").first.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390
            _shot(phone, "web-phone.png", doc=True)
            phone.close()

            # ---- it keeps up: a full hour of synthetic groups (24 × 192 cells each), one at a time
            perf = browser.new_page(viewport={"width": 1400, "height": 1000})
            perf.goto(svc.url + "/")
            expect(perf.locator("#conn")).to_have_text("live", timeout=20_000)
            ms = perf.evaluate("""() => {
              const mk = (g) => { const t0 = 60000 + g * 309.12 / 86400, nt = 24, nb = 192;
                return { type: 'waterfall', group_id: 'G' + g, selection: 'avg', pol: 'XX',
                  time_mjd: Array.from({length: nt}, (_, k) => t0 + k * 12.88 / 86400),
                  freq_mhz: Array.from({length: nb}, (_, k) => 1311.25 + k * 0.9766),
                  amp: Array.from({length: nt}, () => Array.from({length: nb}, () => Math.random() * 3)),
                  flagged: Array.from({length: nt}, () => Array.from({length: nb}, () => Math.random() < 0.1 ? 1 : 0)) }; };
              wfClear(); const ms = [];
              for (let g = 0; g < 30; g++) {
                const text = JSON.stringify(mk(g)), t = performance.now();
                onWaterfall(JSON.parse(text)); ms.push(performance.now() - t);
              }
              return ms; }""")
            assert perf.locator("#waterfall").get_attribute("data-groups") == "12"  # an hour of 309 s groups
            assert max(ms[12:]) < 1000 and sorted(ms)[len(ms) // 2] < 300, ms  # a group a second would keep up
            perf.close()

            # ---- the service restarts: the page notices, reconnects and keeps its waterfall
            page.goto(svc.url + "/")
            expect(page.locator("#waterfall")).to_have_attribute("data-rows", "48", timeout=20_000)
            assert svc.stop() == 0
            expect(page.locator("#conn")).to_have_text("reconnecting…", timeout=20_000)
            svc = ServiceThread(root, cfg).start()
            expect(page.locator("#conn")).to_have_text("live", timeout=30_000)
            expect(page.locator("#images figure")).to_have_count(2, timeout=30_000)
            assert page.locator("#waterfall").get_attribute("data-rows") == "48"
            browser.close()
        assert not errors, errors
    finally:
        svc.stop()

"""The page in a real headless Chromium (Debian's chromium, driven by Playwright): the waterfall
fills and the queue advances while groups arrive, and the page carries on by itself after the
service restarts. Screenshots go to tests/artifacts/ (or $CONTIMG_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from contimg.config import load_config
from webutil import ServiceThread

ARTIFACTS = Path(os.environ.get("CONTIMG_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))


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


def _canvas_painted(page) -> int:
    """Pixels of the waterfall canvas that are not the background."""
    return page.evaluate("""() => {
        const c = document.getElementById('waterfall');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] !== 11 || d[i + 1] !== 14 || d[i + 2] !== 19) n++;
        return n;
    }""")


def test_live_page_waterfall_queue_images_and_restart(tmp_path, sim_dir):
    from playwright.sync_api import expect, sync_playwright

    from contimg.io.naming import group_files, scan_folder

    chromium = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cfg = load_config("test", use_env=False, overrides={
        "image": {"npix": 256, "cell_arcsec": 20.0, "niter": 50, "products": ["restored"]},
        "web": {"port": _free_port()}, "service": {"settle_s": 0.2, "poll_interval_s": 0.2}})
    groups = group_files(scan_folder(sim_dir), tolerance_s=60)
    root = tmp_path / "root"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    svc = ServiceThread(root, cfg).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(svc.url + "/")
            expect(page.locator("#conn")).to_have_text("live", timeout=20_000)
            assert _canvas_painted(page) == 0

            for p in groups[0].files.values():  # the first group arrives
                shutil.copy(p, incoming / p.name)
            row0 = page.locator(f'#queue tr[data-group="{groups[0].group_id}"]')
            expect(row0).to_have_attribute("data-state", "in_progress", timeout=60_000)
            expect(page.locator("#waterfall")).to_have_attribute("data-rows", "24", timeout=60_000)
            assert _canvas_painted(page) > 768 * 24 * 3 * 0.9  # 24 integrations × 3 px rows
            expect(row0).to_have_attribute("data-state", "completed", timeout=120_000)
            expect(page.locator("#images figure")).to_have_count(1, timeout=30_000)
            expect(page.locator("#images img")).to_have_js_property("complete", True)
            assert page.locator("#images img").evaluate("img => img.naturalWidth") == 256
            expect(page.locator("#cal-info")).to_contain_text("1156+314", timeout=30_000)
            qa_row = page.locator(f'#qa tr[data-group="{groups[0].group_id}"]')
            expect(qa_row.locator("td")).to_have_count(8, timeout=30_000)  # the four gates and the cross-match
            page.screenshot(path=str(ARTIFACTS / "page-first-group.png"), full_page=True)

            # the service restarts: the page notices and reconnects by itself
            assert svc.stop() == 0
            expect(page.locator("#conn")).to_have_text("reconnecting…", timeout=20_000)
            svc = ServiceThread(root, cfg).start()
            expect(page.locator("#conn")).to_have_text("live", timeout=30_000)
            for p in groups[1].files.values():
                shutil.copy(p, incoming / p.name)
            row1 = page.locator(f'#queue tr[data-group="{groups[1].group_id}"]')
            expect(row1).to_have_attribute("data-state", "completed", timeout=120_000)
            expect(page.locator("#images figure")).to_have_count(2, timeout=30_000)
            expect(page.locator("#qa tbody tr")).to_have_count(2, timeout=30_000)
            rows = int(page.locator("#waterfall").get_attribute("data-rows"))
            assert rows >= 24  # the new group's rows arrived on the reconnected socket
            page.screenshot(path=str(ARTIFACTS / "page-after-restart.png"), full_page=True)
            page.locator("#images figure").first.click()
            expect(page.locator("#zoom")).to_be_visible()
            browser.close()
        assert not errors, errors
    finally:
        svc.stop()

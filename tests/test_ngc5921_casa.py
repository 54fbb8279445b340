"""The CASA reference for NGC5921 (docs/benchmarks/ngc5921_casa.json, written by
tools/casa_ngc5921.py in CASA's own venv): its shape, that the figures in
docs/benchmarks/ngc5921.md are the ones the JSON holds, and that CASA stays out of contimg's
dependencies. No CASA is needed here."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "docs/benchmarks/ngc5921_casa.json"
DOC = ROOT / "docs/benchmarks/ngc5921.md"


def _tool():
    spec = importlib.util.spec_from_file_location("casa_ngc5921", ROOT / "tools/casa_ngc5921.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_doc_figures_come_from_the_json():
    tool = _tool()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tool.main(["summary", str(RESULT)])
    block = re.search(r"<!-- summary: begin[^\n]*-->\n(.*?)<!-- summary: end -->", DOC.read_text(), re.S)
    assert block, "ngc5921.md lost its summary markers"
    assert block.group(1).strip() == out.getvalue().strip(), \
        "regenerate: python tools/casa_ngc5921.py summary docs/benchmarks/ngc5921_casa.json --md docs/benchmarks/ngc5921.md"


def test_result_shape():
    r = json.loads(RESULT.read_text())
    nant = len(r["antennas"])
    nchan = r["ms"]["spw"]["nchan"]
    ref = r["choices"]["refant"]["id"]
    assert r["versions"]["casatools"] == "6.7.0.31"
    assert r["fluxscale"]["flux_jy"] > 0 and r["fluxscale"]["flux_err_jy"] > 0
    for key in ("gains", "gains_fluxscaled"):
        for s in r[key]["solutions"]:
            amp = np.array(s["amp"], dtype=float)  # null -> nan
            assert amp.shape == (nant, 2)
            assert np.array(s["phase_deg"][ref], dtype=float).tolist() == [0.0, 0.0]
    assert np.array(r["bandpass"]["amp"], dtype=float).shape == (nant, nchan, 2)
    # the tool's own checks passed when it ran
    assert r["checks"]["manual_apply_vs_casa_1331+305"]["max_rel_diff"] < 1e-5
    assert r["checks"]["applycal_subcommand_vs_tutorial_apply_1445+099"]["max_abs_diff_jy"] == 0.0


def test_casa_is_not_a_dependency():
    text = (ROOT / "pyproject.toml").read_text().lower()
    assert "casatools" not in text and "casatasks" not in text and "casadata" not in text

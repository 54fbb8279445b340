"""The regression benchmark CI records (tools/bench.py regress): per-stage seconds of one small
group, printed beside the committed baseline at the end of the test run. It never fails on
time; it fails when the benchmark cannot run or measures no stage."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from conftest import REGRESS_KEY  # the stash key the terminal summary reads

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("contimg_bench", ROOT / "tools/bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_regression_benchmark_measures_every_stage(sim_dir, request, tmp_path):
    bench = _tool()
    res = bench.regress(sim_dir, repeats=2)
    assert set(res["stages_s"]) == {"read", "flag", "calibrate", "image", "write"}
    assert all(v > 0 for v in res["stages_s"].values())
    assert abs(res["total_s"] - sum(res["stages_s"].values())) < 1e-9
    baseline = json.loads(bench.BASELINE.read_text())
    assert set(baseline["stages_s"]) == set(res["stages_s"])
    lines = bench.regress_table(res, baseline)
    assert len(lines) == 1 + len(res["stages_s"]) + 1 and all("x the baseline" in ln for ln in lines[1:])
    request.config.stash[REGRESS_KEY] = lines
    (tmp_path / "regress.json").write_text(json.dumps(res))

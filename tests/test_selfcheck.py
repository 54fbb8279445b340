"""The backend of each stage chosen once after a self-check against the CPU twin
(`contimg.device.selfcheck`, the stages' checks in `contimg.imaging.selfcheck`).

Without a device the checks run the device path as array code on numpy (``device="array"``);
with the ``gpu`` marker the same body runs them on the CUDA device. A disagreement is forced by
perturbing the device path (monkeypatched), and ``auto`` must then choose the CPU and say why."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from contimg.device import selfcheck as choice
from contimg.imaging import selfcheck


@pytest.fixture(autouse=True)
def _fresh():
    choice.forget_choices()
    yield
    choice.forget_choices()


@pytest.mark.parametrize("device", ["array", pytest.param(None, id="gpu", marks=pytest.mark.gpu)])
def test_every_stage_passes_its_check_and_the_choice_is_recorded(device):
    out = selfcheck.choose_backends(device=device)
    assert set(out) == set(choice.STAGES)
    for stage, c in out.items():
        assert (c.backend, c.checked, c.passed) == ("gpu", True, True), (stage, c.reason)
        assert c.figures and all(f.ok for f in c.figures)
    shown = json.loads(json.dumps(choice.chosen_backends()))  # plain types: status, web page, metrics
    assert shown["image"]["figures"]["dirty_vs_ducc0"]["value"] < 1e-3
    assert shown["calibrate"]["figures"]["gain_flags_differing"] == {"value": 0.0, "limit": 0.0, "ok": True}
    assert shown["flag"]["passed"] is True and shown["flag"]["seconds"] > 0


def _perturb_flag(monkeypatch):
    """The device path's dilation flags one more sample beside each flagged one."""
    from contimg.flag import xp as flag_xp

    real = flag_xp.sir_dilate

    def dilate(**kw):
        out = real(**kw)
        return out | np.roll(out, 1, axis=kw["axis"])

    monkeypatch.setattr(flag_xp, "sir_dilate", dilate)
    return "flags_differing_fraction"


def _perturb_calibrate(monkeypatch):
    """The device path's StEFCal returns gains 1e-3 too large."""
    from contimg.calibrate import xp as cal_xp

    real = cal_xp.stefcal

    def stefcal(**kw):
        g, change, iters = real(**kw)
        return g * 1.001, change, iters

    monkeypatch.setattr(cal_xp, "stefcal", stefcal)
    return "gain_max_abs_difference"


def _perturb_image(monkeypatch):
    """The gridding correction 1 % off: the images no longer agree with ducc0."""
    from contimg.imaging import wgrid

    real = wgrid._corrections

    def corrections(plan, xp):
        nm1s, corr = real(plan, xp)
        return nm1s, corr * 1.01

    monkeypatch.setattr(wgrid, "_corrections", corrections)
    return "dirty_vs_ducc0"


@pytest.mark.parametrize("stage", ["flag", "calibrate", "image"])
def test_a_disagreeing_check_makes_auto_choose_the_cpu_and_gpu_refuse(stage, monkeypatch, caplog):
    figure = {"flag": _perturb_flag, "calibrate": _perturb_calibrate, "image": _perturb_image}[stage](monkeypatch)
    others = {s: "cpu" for s in choice.STAGES if s != stage}
    with caplog.at_level(logging.ERROR, logger="contimg.device.selfcheck"):
        out = selfcheck.choose_backends(**{stage: "auto"}, **others, device="array")
    c = out[stage]
    assert (c.backend, c.checked, c.passed) == ("cpu", True, False)
    assert figure in c.reason and "failed" in c.reason
    assert not {f.name: f for f in c.figures}[figure].ok
    assert any(stage in r.getMessage() and figure in r.getMessage() for r in caplog.records)
    for s in others:  # "cpu" is never checked
        assert (out[s].backend, out[s].checked) == ("cpu", False)
    assert choice.chosen_backends()[stage]["backend"] == "cpu"
    with pytest.raises(choice.SelfCheckFailed, match=figure):
        selfcheck.choose_backends(**{stage: "gpu"}, **others, device="array")
    assert choice.chosen(stage).passed is False


def test_the_image_stage_choice_is_what_the_imager_asks():
    """`device_selfcheck` (what ``image.backend = "auto"`` consults) answers from the recorded
    image choice: a failed check is the reason, a passed one None."""
    bad = choice.choose_backend("image", "auto", device_available=True,
                                check=lambda: [choice.Figure("dirty_vs_twin", 0.5, 1e-3)])
    assert bad.backend == "cpu" and selfcheck.device_selfcheck() == bad.reason
    choice.choose_backend("image", "auto", device_available=True, check=lambda: [choice.Figure("x", 0.0, 0.0)])
    assert selfcheck.device_selfcheck() is None


def test_no_device_a_raising_check_and_cpu():
    ran = []

    def check():
        ran.append(1)
        return [choice.Figure("x", 0.0, 1.0)]

    c = choice.choose_backend("flag", "auto", device_available=False, check=check)
    assert (c.backend, c.checked, c.reason) == ("cpu", False, "no CUDA device") and not ran
    with pytest.raises(RuntimeError, match="no CUDA device"):
        choice.choose_backend("flag", "gpu", device_available=False, check=check)
    c = choice.choose_backend("calibrate", "cpu", device_available=True, check=check)
    assert (c.backend, c.checked) == ("cpu", False) and not ran
    c = choice.choose_backend("image", "auto", device_available=True, check=lambda: 1 / 0)
    assert (c.backend, c.passed) == ("cpu", False) and "ZeroDivisionError" in c.reason
    c = choice.choose_backend("image", "auto", device_available=True, check=lambda: [choice.Figure("y", np.nan, 1.0)])
    assert c.backend == "cpu" and "y nan" in c.reason
    c = choice.choose_backend("image", "auto", device_available=True, check=lambda: [])
    assert c.backend == "cpu" and "no figure" in c.reason
    with pytest.raises(ValueError, match="unknown flag.backend"):
        choice.choose_backend("flag", "twin", device_available=True, check=check)
    from contimg.device.backend import gpu_available

    if not gpu_available():  # the service's default on a machine without a device
        out = selfcheck.choose_backends()
        assert {s: (c.backend, c.checked) for s, c in out.items()} == {s: ("cpu", False) for s in choice.STAGES}


# --- the service chooses once, at start-up, and says so ------------------------------------------------


def _service(tmp_path, **backends):
    from contimg.config import load_config
    from contimg.service.core import Service

    cfg = load_config("test", use_env=False, overrides={s: {"backend": b} for s, b in backends.items()})
    return Service(tmp_path / "root", cfg, mode="drain")


def test_service_runs_each_stage_on_the_backend_its_check_chose(tmp_path, monkeypatch, caplog):
    """At open: a device path that disagrees with its twin (flag, forced) puts that stage on the
    CPU with the reason logged; the others pass and run on the device path. The configuration
    the stages get carries the choice, and health.json / `status` show it with the reasons."""
    from functools import partial

    from contimg.service import core
    from contimg.state.status import format_status

    monkeypatch.setattr(core, "choose_backends", partial(selfcheck.choose_backends, device="array"))
    _perturb_flag(monkeypatch)
    svc = _service(tmp_path)
    with caplog.at_level(logging.ERROR, logger="contimg.device.selfcheck"):
        svc.open()
    try:
        assert (svc.cfg.flag.backend, svc.cfg.calibrate.backend, svc.cfg.image.backend) == ("cpu", "gpu", "gpu")
        assert any("flag on the CPU (backend auto)" in r.getMessage() for r in caplog.records)
        import asyncio

        svc.q_claim, svc.q_read, svc.q_write = asyncio.Queue(), asyncio.Queue(), asyncio.Queue()  # made by run()
        doc = svc.health_doc()
    finally:
        svc.close()
    assert doc["backend"] == "flag cpu, calibrate gpu, image gpu"
    assert doc["backends"]["flag"]["passed"] is False
    assert not doc["backends"]["flag"]["figures"]["flags_differing_fraction"]["ok"]
    shown = format_status({"root": "r", "service": {**json.loads(json.dumps(doc)), "alive": True, "age_s": 0.0},
                           "queue": {}, "in_progress": [], "pending": [], "recent_failures": [],
                           "stage_median_s": {}, "latest_images": []})
    assert "stages on: flag cpu (self-check against the CPU twin failed: flags_differing_fraction" in shown
    assert "calibrate gpu (self-check passed against the CPU twin)" in shown
    flag_fig = doc["backends"]["flag"]["figures"]["flags_differing_fraction"]["value"]
    assert "flag self-check (" in shown and f"flags_differing_fraction {flag_fig:.3g} > 0.001" in shown
    assert "gain_flags_differing 0 ≤ 0" in shown and "dirty_vs_ducc0 " in shown


def test_the_web_view_and_metrics_show_each_stage_s_check_and_figures(tmp_path, monkeypatch):
    """/api/status gives each stage's choice with its reason and figures (what the page's
    "Stages on" table shows), and /api/metrics every figure with its limit."""
    from functools import partial

    import httpx
    from webutil import ServiceThread

    from contimg.config import load_config
    from contimg.service import core

    monkeypatch.setattr(core, "choose_backends", partial(selfcheck.choose_backends, device="array"))
    _perturb_flag(monkeypatch)
    root = tmp_path / "root"
    (root / "incoming").mkdir(parents=True)
    cfg = load_config("test", use_env=False, overrides={"web": {"port": 0}})
    st = ServiceThread(root, cfg).start()
    try:
        status = httpx.get(st.url + "/api/status").json()
        metrics = httpx.get(st.url + "/api/metrics").text
    finally:
        assert st.stop() == 0
    b = status["backends"]
    assert (b["flag"]["backend"], b["calibrate"]["backend"], b["image"]["backend"]) == ("cpu", "gpu", "gpu")
    assert b["flag"]["passed"] is False and "flags_differing_fraction" in b["flag"]["reason"]
    fig = b["flag"]["figures"]["flags_differing_fraction"]
    assert fig["ok"] is False and fig["value"] > fig["limit"] == selfcheck.FLAG_DIFF_LIMIT
    assert b["image"]["figures"]["dirty_vs_ducc0"]["ok"] and b["image"]["seconds"] > 0
    assert f'contimg_selfcheck_figure{{figure="flags_differing_fraction",stage="flag",what="limit"}} 0.001' in metrics
    value = float(metrics.split('contimg_selfcheck_figure{figure="flags_differing_fraction",stage="flag",what="value"} ')[1].split()[0])
    assert value == pytest.approx(fig["value"])
    assert 'contimg_stage_on_device{checked="true",requested="auto",stage="calibrate"} 1.0' in metrics


def test_service_refuses_gpu_without_a_device(tmp_path):
    """``backend = "gpu"`` on a host with no CUDA device: the service does not start (a
    configuration error naming the key), and nothing is created in the root."""
    from contimg.config import ConfigError
    from contimg.device.backend import gpu_available

    if gpu_available():
        pytest.skip("a CUDA device is present")
    svc = _service(tmp_path, calibrate="gpu")
    with pytest.raises(ConfigError, match=r"calibrate.backend = 'gpu', but cupy finds no CUDA device"):
        svc.open()
    assert not (tmp_path / "root" / "state").exists()


# --- whoever runs the stages: "auto" goes through the self-check ----------------------------------------


def _has_cupy() -> bool:
    import importlib.util

    return importlib.util.find_spec("cupy") is not None


def test_a_stage_run_outside_the_service_resolves_auto_through_the_self_check(tmp_path, monkeypatch, sim_dir,
                                                                            test_config):
    """A cluster worker or an export runs the stages with the configuration as written ("auto"),
    without the service's start-up choice. On a host where a device is usable (here: said to be)
    and the flag stage's check disagrees, the stage flags on the CPU, the check runs once per
    process, and the choice is recorded with its figure; a check that passes lets the device in."""
    from contimg.device import backend
    from contimg.io.naming import group_files, scan_folder
    from contimg.io.store import read_zarr
    from contimg.pipeline.stages import GroupWork, run_stage

    monkeypatch.setattr(backend, "gpu_available", lambda: True)
    ran = []

    def disagreeing(*, device):
        ran.append(device)
        return [choice.Figure("flags_differing_fraction", 0.5, selfcheck.FLAG_DIFF_LIMIT)]

    monkeypatch.setitem(selfcheck.CHECKS, "flag", disagreeing)
    cfg = test_config.model_copy(update={"flag": test_config.flag.model_copy(update={"backend": "auto"})})
    group = group_files(scan_folder(sim_dir), tolerance_s=60)[0]
    for _ in range(2):
        work = GroupWork(group=group, root=tmp_path / "root")
        run_stage("read", work, cfg)
        run_stage("flag", work, cfg)
        assert read_zarr(work.out_dir / "flags.zarr")[1]["backend"] == "cpu"
    assert ran == ["gpu"]  # once in this process
    c = choice.chosen("flag")
    assert (c.requested, c.backend, c.checked, c.passed) == ("auto", "cpu", True, False)
    assert "flags_differing_fraction 0.5" in c.reason
    # (the run resolved every "auto" stage: calibrate and image failed their checks here, with no cupy)
    assert "No module named 'cupy'" in choice.chosen("calibrate").reason or _has_cupy()
    choice.forget_choices()
    monkeypatch.setitem(selfcheck.CHECKS, "calibrate", lambda *, device: [choice.Figure("g", 0.0, 1e-5)])
    assert selfcheck.resolved_backend("calibrate", "auto") == "gpu"
    assert selfcheck.resolved_backend("calibrate", "cpu") == "cpu"
    assert selfcheck.resolved_backend("image", "twin") == "twin"

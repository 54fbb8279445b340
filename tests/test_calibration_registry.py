"""The calibration registry (`contimg.state.calregistry`): registration and replay idempotence, the
validity windows, the choice of solution (rejected ones never), interpolation in time between
two bracketing solutions against an analytic truth, staleness levels and their alerts, and a
pipeline run whose second group applies the first group's registered solution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contimg.calibrate import GainSolution
from contimg.config import load_config
from contimg.calibrate.registry import (interpolate_gains, registration_row, select_solutions, solution_for,
                                       staleness_level)
from contimg.state.calregistry import CalRegistry
from contimg.calibrate.storage import load_solution, load_time_gains, save_solution
from contimg.io.store import read_zarr
from contimg.pipeline.calibration import adopt_unregistered

MJD_JD = 2400000.5
HOUR = 1.0 / 24.0
FREQ = np.linspace(1.311e9, 1.499e9, 48)


def _row(name, mid_mjd, *, status="active", half_h=24.0, freq=FREQ, created_at=0.0, path="x"):
    return {"set_name": name, "path": path, "cal_type": "bandpass", "apply_order": 0, "calibrator": "c", "refant": "24",
            "created_at": created_at, "valid_start_mjd": mid_mjd - half_h * HOUR, "valid_end_mjd": mid_mjd + half_h * HOUR,
            "mid_mjd": mid_mjd, "status": status, "params_json": "{}", "quality_json": "{}", "group_id": name,
            "n_antennas": 3, "n_channels": freq.size, "freq_min_hz": float(freq.min()), "freq_max_hz": float(freq.max())}


def _solution(name, mid_mjd, gains, flags=None, freq=FREQ):
    nant = gains.shape[0]
    return GainSolution(np.arange(nant), freq, gains.astype(np.complex64),
                        np.zeros(gains.shape, bool) if flags is None else flags,
                        np.full(gains.shape, 50, np.float32), "24", mid_mjd + MJD_JD, "3C286", name, 10, {})


def _rotating(t_h, nant=6, nchan=FREQ.size, npol=2):
    """Analytic gains at time t_h (hours): amplitude 1 + 0.1 t + 0.01 a, phase phi0 + omega t with
    per-antenna, channel and polarization phi0 in [-pi, pi) and rates up to 170 deg/h (so the
    phase crosses ±180 deg between t = 0 and 1 h for many of them)."""
    rng = np.random.default_rng(3)
    phi0 = rng.uniform(-np.pi, np.pi, (nant, nchan, npol))
    omega = np.radians(rng.uniform(-170, 170, (nant, nchan, npol)))
    amp = 1.0 + 0.1 * t_h + 0.01 * np.arange(nant)[:, None, None]
    return amp * np.exp(1j * (phi0 + omega * t_h))


# ---- interpolation ------------------------------------------------------------------------------

@pytest.mark.parametrize("t_h", [0.5, 0.25, 0.9])
def test_interpolation_matches_a_linearly_rotating_phase(t_h):
    g0, g1, truth = _rotating(0.0), _rotating(1.0), _rotating(t_h)
    assert np.mean(np.abs(np.angle(g1) - np.angle(g0)) > np.pi) > 0.1  # wraps across ±180 deg often
    t0 = 60000.0
    gains, flags = interpolate_gains(t_mjd=t0 + t_h * HOUR, t0_mjd=t0, gains0=g0.astype(np.complex64),
                                     flags0=np.zeros(g0.shape, bool), t1_mjd=t0 + HOUR,
                                     gains1=g1.astype(np.complex64), flags1=np.zeros(g1.shape, bool))
    assert gains.dtype == np.complex64 and gains.shape == g0.shape and not flags.any()
    # to float32 precision: relative error a few 1e-7 (the inputs themselves are complex64)
    err = np.abs(gains - truth) / np.abs(truth)
    assert err.max() < 2e-6, err.max()


def test_interpolation_ors_the_flags_and_zeroes_flagged_gains():
    g = _rotating(0.0, nant=2, nchan=4, npol=1).astype(np.complex64)
    f0, f1 = np.zeros(g.shape, bool), np.zeros(g.shape, bool)
    f0[0, 1, 0] = True
    f1[1, 3, 0] = True
    gains, flags = interpolate_gains(t_mjd=0.5, t0_mjd=0.0, gains0=g, flags0=f0, t1_mjd=1.0, gains1=g, flags1=f1)
    assert flags.sum() == 2 and flags[0, 1, 0] and flags[1, 3, 0]
    assert gains[0, 1, 0] == 0 and gains[1, 3, 0] == 0
    np.testing.assert_allclose(gains[~flags], g[~flags], rtol=1e-6)  # the same gains at both ends


# ---- selection and validity windows ----------------------------------------------------------------

def test_validity_window_bounds_are_inclusive_and_exact():
    rows = [_row("a", 60000.0, half_h=1.0)]
    end = 60000.0 + HOUR
    assert [r["set_name"] for r, _ in select_solutions(rows=rows, mid_mjd=end, freq_hz=FREQ)] == ["a"]
    assert [r["set_name"] for r, _ in select_solutions(rows=rows, mid_mjd=60000.0 - HOUR, freq_hz=FREQ)] == ["a"]
    assert select_solutions(rows=rows, mid_mjd=end + 1.0 / 86400, freq_hz=FREQ) == []  # one second later
    assert select_solutions(rows=rows, mid_mjd=60000.0 - HOUR - 1.0 / 86400, freq_hz=FREQ) == []


def test_selection_brackets_with_time_weights_else_nearest():
    rows = [_row("a", 60000.0), _row("b", 60000.0 + 4 * HOUR), _row("old", 60000.0 - 3 * HOUR)]
    chosen = select_solutions(rows=rows, mid_mjd=60000.0 + 1 * HOUR, freq_hz=FREQ)
    assert [r["set_name"] for r, _ in chosen] == ["a", "b"]  # the nearest on each side
    np.testing.assert_allclose([w for _, w in chosen], [0.75, 0.25])
    # after the last one: the nearest (b), alone
    chosen = select_solutions(rows=rows, mid_mjd=60000.0 + 5 * HOUR, freq_hz=FREQ)
    assert [(r["set_name"], w) for r, w in chosen] == [("b", 1.0)]
    # b's window is over 28 h after it: a is valid, b is not -> nearest valid is a... a's ended too
    assert select_solutions(rows=rows, mid_mjd=60000.0 + 4 * HOUR + 25 * HOUR, freq_hz=FREQ) == []
    chosen = select_solutions(rows=rows, mid_mjd=60000.0 + 23.5 * HOUR, freq_hz=FREQ)
    assert [r["set_name"] for r, _ in chosen] == ["b"]


def test_newest_registration_wins_among_equal_times():
    rows = [_row("first", 60000.0, created_at=1.0), _row("second", 60000.0, created_at=2.0)]
    chosen = select_solutions(rows=rows, mid_mjd=60000.0 + 2 * HOUR, freq_hz=FREQ)
    assert [r["set_name"] for r, _ in chosen] == ["second"]


def test_rejected_superseded_and_other_channels_are_never_chosen():
    other = np.linspace(1.2e9, 1.3e9, 48)
    rows = [_row("older", 60000.0 - 2 * HOUR), _row("bad", 60000.0, status="rejected"),
            _row("retired", 60000.0 + 0.1 * HOUR, status="superseded"), _row("elsewhere", 60000.0, freq=other)]
    chosen = select_solutions(rows=rows, mid_mjd=60000.0 + 0.2 * HOUR, freq_hz=FREQ)
    assert [(r["set_name"], w) for r, w in chosen] == [("older", 1.0)]
    assert select_solutions(rows=rows[1:], mid_mjd=60000.0, freq_hz=FREQ) == []


# ---- staleness ----------------------------------------------------------------------------------

def test_staleness_levels_and_their_boundaries():
    th = dict(aging_hours=1.0, stale_hours=6.0, critical_hours=24.0)
    assert [staleness_level(age_hours=a, **th) for a in (0.0, 1.0, 1.01, 6.0, 6.01, 24.0, 24.01, -3.0)] == \
        ["fresh", "fresh", "aging", "aging", "stale", "stale", "critical", "aging"]
    assert staleness_level(age_hours=None, **th) == "critical"  # nothing applied


def test_staleness_in_the_gate_and_the_alert(tmp_path):
    from contimg.config import load_config
    from contimg.state.products import ProductsDB
    from contimg.qa.gates import calibrate_gate
    from contimg.service.recorder import QARecorder

    cfg = load_config("test", use_env=False)
    g = _rotating(0.0, nant=8, nchan=16, npol=2)
    g = np.abs(g) * np.exp(1j * 0.3 * np.arange(8)[:, None, None])  # smooth: passes the quality checks
    snr = np.full(g.shape, 100.0)
    sent = []

    class Alerts:
        def raise_alert(self, severity, category, message, key=None):
            sent.append((severity, category))

    products = ProductsDB(tmp_path / "products.sqlite3")
    rec = QARecorder(products=products, alerts=Alerts(), cfg=cfg)
    expected = {0.5: ("fresh", []), 3.0: ("aging", []), 10.0: ("stale", [("warning", "stale_calibration")]),
                30.0: ("critical", [("critical", "stale_calibration"), ("warning", "qa_calibrate")])}
    for age, (level, alerts) in expected.items():
        gate = calibrate_gate(gains=g, flags=np.zeros(g.shape, bool), snr=snr, freq_hz=FREQ[:16],
                              solution_age_hours=age, solved_here=False, cfg=cfg.qa)
        assert gate.metrics["staleness"] == level and gate.passed == (level != "critical"), (age, gate)
        sent.clear()

        class Work:
            group_id = f"g{age}"
            gates = {"calibrate": gate}
            gates_recorded: set = set()
            artifacts: list = []

        rec.record_stage(Work())
        assert sorted(sent) == sorted(alerts), (age, sent)
    gate = calibrate_gate(gains=None, flags=None, snr=None, freq_hz=FREQ, solution_age_hours=0.0, solved_here=False,
                          cfg=cfg.qa)
    assert gate.metrics["staleness"] == "critical" and not gate.passed
    products.close()


def test_solution_quality_rejects_scrambled_phases():
    from contimg.config import QAConfig
    from contimg.qa.gates import solution_quality

    cfg = QAConfig()
    rng = np.random.default_rng(1)
    delay = np.exp(2j * np.pi * (FREQ - FREQ[0])[None, :, None] * rng.uniform(-5e-9, 5e-9, (10, 1, 1)))
    good = np.ones((10, FREQ.size, 2)) * delay
    flags, snr = np.zeros(good.shape, bool), np.full(good.shape, 80.0)
    metrics, reasons = solution_quality(gains=good, flags=flags, snr=snr, freq_hz=FREQ, cfg=cfg)
    assert reasons == [] and metrics["phase_scatter_deg"] < 1e-3
    scrambled = good * np.exp(1j * rng.uniform(-np.pi, np.pi, good.shape))
    metrics, reasons = solution_quality(gains=scrambled, flags=flags, snr=snr, freq_hz=FREQ, cfg=cfg)
    assert any("phase scatter" in r for r in reasons) and metrics["phase_scatter_deg"] > 50
    half = flags.copy()
    half[:3] = True  # 3 of 10 antennas entirely flagged: 30 % (allowed), the worst antenna 100 %
    metrics, reasons = solution_quality(gains=good, flags=half, snr=snr, freq_hz=FREQ, cfg=cfg)
    assert metrics["flagged_fraction"] == pytest.approx(0.3) and metrics["max_antenna_flagged_fraction"] == 1.0


# ---- the registry database ------------------------------------------------------------------------

def test_registration_is_idempotent_and_points_at_whole_tables(tmp_path):
    reg = CalRegistry(tmp_path / "state" / "cal_registry.sqlite3")
    assert reg.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sol = _solution("2026-01-01T00:00:00", 60000.0, _rotating(0.0))
    path = save_solution(tmp_path / "cal" / f"{sol.group_id}.zarr", sol)
    row = registration_row(sol=sol, path=path, cal_type="bandpass", validity_h=24.0, passed=True,
                           params={"refant": "24"}, quality={"passed": True})
    reg.register(row)
    reg.register({**row, "created_at": row["created_at"] + 5})  # a replay of the same group
    rows = reg.rows()
    assert len(rows) == 1
    r = rows[0]
    assert (r["set_name"], r["status"], r["cal_type"], r["apply_order"], r["calibrator"], r["refant"]) == \
        (sol.group_id, "active", "bandpass", 0, "3C286", "24")
    assert r["valid_start_mjd"] == pytest.approx(59999.0) and r["valid_end_mjd"] == pytest.approx(60001.0)
    assert r["mid_mjd"] == pytest.approx(60000.0) and json.loads(r["params_json"]) == {"refant": "24"}
    assert (r["n_antennas"], r["n_channels"]) == (6, FREQ.size)
    with pytest.raises(FileNotFoundError):
        reg.register({**row, "set_name": "ghost", "path": str(tmp_path / "cal" / "ghost.zarr")})
    reg.set_status(sol.group_id, "superseded")
    reg.register(row)  # registering again does not bring a retired table back
    assert reg.row(sol.group_id)["status"] == "superseded" and reg.candidates(mjd=60000.0) == []
    reg.close()


def test_a_group_between_two_registered_solutions_gets_them_interpolated(tmp_path):
    """Two stored, registered solutions 1 h apart; a group at 20 min gets the analytic gains of
    that time; with the later one rejected it gets the earlier one unchanged."""
    reg = CalRegistry(tmp_path / "cal_registry.sqlite3")
    t0 = 60000.0
    for name, t_h in (("a", 0.0), ("b", 1.0)):
        sol = _solution(name, t0 + t_h * HOUR, _rotating(t_h))
        path = save_solution(tmp_path / "cal" / f"{name}.zarr", sol)
        reg.register(registration_row(sol=sol, path=path, cal_type="bandpass", validity_h=24.0, passed=True,
                                      params={}, quality={}))
    mid_jd = t0 + HOUR / 3 + MJD_JD
    got = solution_for(rows=reg.candidates(mjd=t0), mid_jd=mid_jd, freq_hz=FREQ, load=load_solution)
    truth = _rotating(1.0 / 3)
    assert np.max(np.abs(got.gains - truth) / np.abs(truth)) < 2e-6
    assert got.group_id == "a" and [s["set_name"] for s in got.meta["solutions"]] == ["a", "b"]
    np.testing.assert_allclose([s["weight"] for s in got.meta["solutions"]], [2 / 3, 1 / 3])
    reg.set_status("b", "rejected")
    got = solution_for(rows=reg.candidates(mjd=t0), mid_jd=mid_jd, freq_hz=FREQ, load=load_solution)
    np.testing.assert_array_equal(got.gains, _rotating(0.0).astype(np.complex64))
    assert got.meta["solutions"] == [{"set_name": "a", "weight": 1.0, "time_gains": False}]
    reg.close()


def test_time_gains_are_folded_in_before_interpolating(tmp_path):
    """Gains ``B0 exp(i w t)`` (a fixed bandpass, phases rotating at up to 170 deg/h per antenna
    and polarization). Sets "a" (t = 0) and "b" (t = 1 h) each register a bandpass (the gain at
    its mid-time) and time gains at -2, 0, +2 min about it. A group at 20 min gets each set's
    bandpass times its time gain nearest the group (a at +2 min, b at 58 min) interpolated
    between those times: the truth at 20 min. With b rejected it gets a's gain at +2 min."""
    from contimg.calibrate import TimeGains
    from contimg.calibrate.storage import save_time_gains

    rng = np.random.default_rng(11)
    nant = 6
    b0 = _rotating(0.0, nant=nant)
    w = np.radians(rng.uniform(-170, 170, (nant, 2)))  # rad/h

    def truth(t_h):
        return b0 * np.exp(1j * w * t_h)[:, None, :]

    reg = CalRegistry(tmp_path / "cal_registry.sqlite3")
    t0 = 60000.0
    for name, t_h in (("a", 0.0), ("b", 1.0)):
        sol = _solution(name, t0 + t_h * HOUR, truth(t_h))
        reg.register(registration_row(sol=sol, path=save_solution(tmp_path / "cal" / f"{name}.zarr", sol),
                                      cal_type="bandpass", validity_h=24.0, passed=True, params={}, quality={}))
        dt_h = np.array([-2.0, 0.0, 2.0]) / 60
        tg = TimeGains(np.arange(nant), t0 + t_h * HOUR + dt_h * HOUR + MJD_JD,
                       np.exp(1j * w[None] * dt_h[:, None, None]).astype(np.complex64),
                       np.zeros((3, nant, 2), bool), np.full((3, nant, 2), 100, np.float32), "24", "3C286", name)
        reg.register(registration_row(sol=tg, path=save_time_gains(tmp_path / "cal" / "gains" / f"{name}.zarr", tg),
                                      cal_type="gains", validity_h=1.0, passed=True, params={}, quality={}))
    mid_jd = t0 + HOUR / 3 + MJD_JD
    kw = dict(mid_jd=mid_jd, freq_hz=FREQ, load=load_solution, load_gains=load_time_gains)
    got = solution_for(rows=reg.candidates(mjd=t0), **kw)
    np.testing.assert_allclose(got.gains, truth(1.0 / 3), rtol=2e-6)
    assert got.meta["solutions"] == [{"set_name": "a", "weight": pytest.approx(38 / 56), "time_gains": True},
                                     {"set_name": "b", "weight": pytest.approx(18 / 56), "time_gains": True}]
    reg.set_status("b", "rejected")
    got = solution_for(rows=reg.candidates(mjd=t0), **kw)
    np.testing.assert_allclose(got.gains, truth(2 / 60), rtol=2e-6)
    assert got.mid_jd == pytest.approx(t0 + HOUR / 30 + MJD_JD, abs=1e-9)
    reg.close()


def test_a_second_calibrator_group_plots_its_gain_history_with_time_gains_registered(tmp_path):
    """A calibrator group that solves while an earlier set's bandpass and time gains are
    registered (a 20-group real-size replay's second transit failed here: the time-gain table
    was read as a bandpass): the history holds the bandpasses only, by time, and the plot is
    made."""
    from contimg.calibrate import TimeGains
    from contimg.calibrate.storage import save_time_gains
    from contimg.io.naming import Group
    from contimg.pipeline.stages import GroupWork, _gain_history_plot, history_solutions

    nant, t0 = 6, 60000.0
    reg = CalRegistry(tmp_path / "cal_registry.sqlite3")
    first = _solution("a", t0, _rotating(0.0, nant=nant))
    reg.register(registration_row(sol=first, path=save_solution(tmp_path / "cal" / "a.zarr", first),
                                  cal_type="bandpass", validity_h=24.0, passed=True, params={}, quality={}))
    tg = TimeGains(np.arange(nant), t0 + np.array([-1.0, 1.0]) / 60 * HOUR + MJD_JD,
                   np.ones((2, nant, 2), np.complex64), np.zeros((2, nant, 2), bool), np.full((2, nant, 2), 100, np.float32),
                   "24", "3C286", "a")
    reg.register(registration_row(sol=tg, path=save_time_gains(tmp_path / "cal" / "gains" / "a.zarr", tg),
                                  cal_type="gains", validity_h=1.0, passed=True, params={}, quality={}))
    gid = "2026-03-22T09:43:56"
    work = GroupWork(group=Group(group_id=gid, files={}), root=tmp_path)
    work.sol = _solution(gid, t0 + 0.35 * HOUR, _rotating(0.35, nant=nant))
    work.cal_candidates = reg.candidates(mjd=t0)
    reg.close()
    assert {r["cal_type"] for r in work.cal_candidates} == {"bandpass", "gains"}
    assert [s.group_id for s in history_solutions(work)] == ["a", gid]
    _gain_history_plot(work)
    [(kind, path)] = work.artifacts
    assert kind == "gain_phase" and Path(path).read_bytes()[:4] == b"\x89PNG"


# ---- through the pipeline -----------------------------------------------------------------------

def test_second_group_applies_the_registered_solution(pipeline_run):
    from contimg.state.products import ProductsDB

    results, code, root = pipeline_run
    assert code == 0
    cal_gid, other_gid = results[0].group_id, results[1].group_id
    assert results[0].calibrator and not (root / "cal" / f"{other_gid}.zarr").exists()
    reg = CalRegistry(root / "state" / "cal_registry.sqlite3")
    rows = reg.rows()
    reg.close()
    assert sorted((r["set_name"], r["cal_type"], r["status"]) for r in rows) == [
        (cal_gid, "bandpass", "active"), (cal_gid, "gains", "active")]
    db = ProductsDB(root / "state" / "products.sqlite3")
    ms = {g["group_id"]: g for g in db.groups()}
    db.close()
    row = next(r for r in rows if r["cal_type"] == "bandpass")
    gains_row = next(r for r in rows if r["cal_type"] == "gains")
    assert row["mid_mjd"] == pytest.approx(ms[cal_gid]["mid_mjd"], abs=1e-9)
    assert row["valid_end_mjd"] - row["mid_mjd"] == pytest.approx(1.0) == row["mid_mjd"] - row["valid_start_mjd"]
    assert gains_row["valid_end_mjd"] - gains_row["mid_mjd"] == pytest.approx(
        load_config("test", use_env=False).calibrate.gain_validity_hours / 24)
    assert row["calibrator"] == ms[cal_gid]["calibrator"] == ms[other_gid]["calibrator"] != ""
    assert ms[other_gid]["cal_applied"] == 1
    # the field group gets the bandpass times the time gain of the set's interval nearest it (the last)
    stored, _ = read_zarr(Path(row["path"]))
    tg, _ = read_zarr(Path(gains_row["path"]))
    assert tg["time_jd"][-1] < ms[other_gid]["mid_mjd"] + 2400000.5
    applied, attrs = read_zarr(root / "products" / other_gid / "cal.zarr")
    assert attrs["solved_on"] == cal_gid
    assert attrs["solutions"] == [{"set_name": cal_gid, "weight": 1.0, "time_gains": True}]
    flags = stored["flags"] | tg["flags"][-1][:, None, :]
    np.testing.assert_array_equal(applied["flags"], flags)
    np.testing.assert_allclose(applied["gains"][~flags], (stored["gains"] * tg["gains"][-1][:, None, :])[~flags],
                               rtol=1e-6)
    gate = results[1].gates["calibrate"]["metrics"]
    age_h = abs(ms[other_gid]["mid_mjd"] - (tg["time_jd"][-1] - 2400000.5)) * 24  # from when the gain was measured
    assert gate["solution_age_hours"] == pytest.approx(age_h, abs=1e-6) and gate["staleness"] == "fresh"
    from contimg.state.status import format_status, status_report

    doc = status_report(root)
    assert sorted((r["set_name"], r["status"]) for r in doc["caltables"]) == [(cal_gid, "active")] * 2
    assert f"caltable {cal_gid}  bandpass  active" in format_status(doc)
    assert f"caltable {cal_gid}  gains  active" in format_status(doc)


def test_a_rejected_solve_is_registered_but_never_applied(tmp_path, sim_dir, pipeline_run):
    """An impossible SNR requirement rejects the calibrator group's solve: its row is
    'rejected', and both groups get the older active solution registered before (stored 30 min
    earlier than the calibrator group) instead."""
    from contimg.config import load_config
    from contimg.service.batch import run_batch

    _, _, first_root = pipeline_run
    good = load_solution(next((first_root / "cal").glob("*.zarr")))
    older = GainSolution(**{**good.__dict__, "group_id": "older", "mid_jd": good.mid_jd - 0.5 / 24})
    root = tmp_path / "root"
    path = save_solution(root / "cal" / "older.zarr", older)
    reg = CalRegistry(root / "state" / "cal_registry.sqlite3")
    reg.register(registration_row(sol=older, path=path, cal_type="bandpass", validity_h=24.0, passed=True, params={},
                                  quality={}))
    reg.close()
    cfg = load_config("test", use_env=False, overrides={
        "qa": {"min_median_snr": 1e9, "plots": False},
        "image": {"npix": 256, "niter": 50, "products": ["restored"]}})
    results, code = run_batch(sim_dir, root=root, cfg=cfg)
    assert code == 0 and [r.status for r in results] == ["completed", "completed"]
    cal_gid = results[0].group_id
    reg = CalRegistry(root / "state" / "cal_registry.sqlite3")
    status = {r["set_name"]: r["status"] for r in reg.rows()}
    quality = json.loads(reg.row(cal_gid)["quality_json"])
    reg.close()
    assert status == {cal_gid: "rejected", "older": "active"}
    assert not quality["passed"] and "median solution SNR" in quality["reasons"][0]
    for r in results:
        _, attrs = read_zarr(root / "products" / r.group_id / "cal.zarr")
        assert r.cal_applied and attrs["solved_on"] == "older", (r.group_id, attrs["solved_on"])
    assert results[0].gates["calibrate"]["metrics"]["solution_rejected"]
    assert not results[0].gates["calibrate"]["passed"]


def test_tables_written_before_the_registry_are_adopted_once(tmp_path):
    """A root upgraded from the glob of <root>/cal: its tables are registered at start-up, a
    smooth one active and one with scrambled phases rejected; a second pass adds nothing."""
    from contimg.config import QAConfig

    rng = np.random.default_rng(5)
    smooth = np.ones((6, FREQ.size, 2)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (6, 1, 2)))
    scrambled = smooth * np.exp(1j * rng.uniform(-np.pi, np.pi, smooth.shape))
    for name, g in (("2026-01-01T00:00:00", smooth), ("2026-01-01T02:00:00", scrambled)):
        save_solution(tmp_path / "cal" / f"{name}.zarr", _solution(name, 60000.0, g))
    (tmp_path / "cal" / "half-written.zarr.tmp").mkdir()
    (tmp_path / "cal" / "garbage.zarr").mkdir()  # not a Zarr group: skipped with a warning
    reg = CalRegistry(tmp_path / "state" / "cal_registry.sqlite3")
    adopted = adopt_unregistered(reg, tmp_path / "cal", bandpass_validity_hours=24.0, qa_cfg=QAConfig())
    assert sorted(adopted) == ["2026-01-01T00:00:00", "2026-01-01T02:00:00"]
    assert {r["set_name"]: r["status"] for r in reg.rows()} == {"2026-01-01T00:00:00": "active",
                                                                "2026-01-01T02:00:00": "rejected"}
    assert json.loads(reg.row("2026-01-01T00:00:00")["params_json"])["adopted"]
    assert adopt_unregistered(reg, tmp_path / "cal", bandpass_validity_hours=24.0, qa_cfg=QAConfig()) == []
    assert len(reg.rows()) == 2
    reg.close()


def test_staleness_thresholds_must_be_ordered():
    from pydantic import ValidationError

    from contimg.config import QAConfig

    with pytest.raises(ValidationError, match="solution_aging_hours"):
        QAConfig(solution_aging_hours=10.0, solution_stale_hours=5.0)
    assert QAConfig(solution_aging_hours=2.0, solution_stale_hours=2.0, solution_critical_hours=2.0)


def test_a_group_between_two_registered_solutions_applies_their_interpolation(tmp_path, sim_dir, pipeline_run):
    """The non-calibrator group alone in a new root with two registered solutions, 20 min
    before and 40 min after its mid-time: the first the real solution x 1.1 e^{i a_k}, the
    second x 0.9 e^{i b_k} (per antenna a_k, b_k in [-1, 1] rad). The gains it applied
    (cal.zarr) must be the real solution x (1.1 (1-w) + 0.9 w) e^{i (a_k (1-w) + b_k w)} with
    w = 1/3 from its own mid-time."""
    import shutil

    from contimg.config import load_config
    from contimg.io.naming import group_files, scan_folder
    from contimg.service.batch import run_batch
    from contimg.state.products import ProductsDB

    results, _, first_root = pipeline_run
    good = load_solution(first_root / "cal" / f"{results[0].group_id}.zarr")
    db = ProductsDB(first_root / "state" / "products.sqlite3")
    mid_mjd = {g["group_id"]: g["mid_mjd"] for g in db.groups()}[results[1].group_id]
    db.close()
    rng = np.random.default_rng(11)
    a, b = rng.uniform(-1, 1, (2, good.gains.shape[0], 1, 1))
    root = tmp_path / "root"
    reg = CalRegistry(root / "state" / "cal_registry.sqlite3")
    for name, dt_h, scale in (("before", -1 / 3, 1.1 * np.exp(1j * a)), ("after", 2 / 3, 0.9 * np.exp(1j * b))):
        sol = GainSolution(**{**good.__dict__, "group_id": name, "mid_jd": mid_mjd + MJD_JD + dt_h * HOUR,
                              "gains": (good.gains * scale).astype(np.complex64)})
        path = save_solution(root / "cal" / f"{name}.zarr", sol)
        reg.register(registration_row(sol=sol, path=path, cal_type="bandpass", validity_h=24.0, passed=True,
                                      params={}, quality={}))
    reg.close()
    src = tmp_path / "in"
    src.mkdir()
    for p in group_files(scan_folder(sim_dir), tolerance_s=60)[1].files.values():
        shutil.copy(p, src / p.name)
    cfg = load_config("test", use_env=False, overrides={
        "qa": {"plots": False}, "image": {"npix": 256, "niter": 50, "products": ["restored"]}})
    out, code = run_batch(src, root=root, cfg=cfg)
    assert code == 0 and out[0].group_id == results[1].group_id and out[0].cal_applied
    applied, attrs = read_zarr(root / "products" / out[0].group_id / "cal.zarr")
    assert [s["set_name"] for s in attrs["solutions"]] == ["before", "after"]
    np.testing.assert_allclose([s["weight"] for s in attrs["solutions"]], [2 / 3, 1 / 3], atol=1e-6)
    w = 1 / 3
    truth = good.gains.astype(np.complex128) * (1.1 * (1 - w) + 0.9 * w) * np.exp(1j * (a * (1 - w) + b * w))
    ok = ~good.flags
    np.testing.assert_array_equal(applied["flags"], good.flags | (np.abs(good.gains) == 0))
    err = np.abs(applied["gains"][ok] - truth[ok]) / np.abs(truth[ok])
    assert err.max() < 1e-5, err.max()  # the weight comes from times in MJD (float64): ~1e-7 here
    assert attrs["solved_on"] == "before"  # the nearer one: the age is counted from it
    assert out[0].gates["calibrate"]["metrics"]["solution_age_hours"] == pytest.approx(1 / 3, abs=1e-6)

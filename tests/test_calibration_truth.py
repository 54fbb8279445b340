"""Calibration against the simulator's truth: a 15 Jy calibrator transit with known antenna
gains (10 % amplitude scatter, random phases, a bandpass ripple, phases drifting at up to
60 deg/hour, three dead antennas), then a field group calibrated from the registry alone."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from contimg.config import load_config
from contimg.io.store import read_zarr

DEAD = ["7", "50", "103"]


@pytest.fixture(scope="module")
def truth_run(tmp_path_factory):
    from contimg.service.batch import run_batch
    from contimg.sim import simulate

    base = tmp_path_factory.mktemp("caltruth")
    cfg = load_config("test", use_env=False, overrides={
        "simulate": {"calibrator": "1331+305", "gain_phase_drift_deg_per_hour": 60.0, "dead_antennas": DEAD,
                     "n_faint_sources": 15},
        # per-channel solutions with SNR ~200 need no smoothing (a 5-channel mean would flatten
        # the simulated ripple by more than the noise)
        "calibrate": {"smooth_channels": 1, "gain_calmode": "ap", "gain_interval_s": 60.0, "solve_delay": True},
        "image": {"npix": 1024, "niter": 5000, "products": ["restored", "pbcor", "residual"]}})
    groups = simulate(base / "in", n_groups=2, cfg=cfg.simulate)
    results, code = run_batch(base / "in", root=base / "root", cfg=cfg)
    assert code == 0, [r.error for r in results]
    assert [g.has_calibrator for g in groups] == [True, False]
    return {"sim": base / "in", "root": base / "root", "groups": groups, "cfg": cfg}


def _truth(sim: Path, gid: str):
    with h5py.File(sim / "truth.h5") as f:
        return f["antenna_numbers"][()], f["bandpass"][()], f[f"groups/{gid}/gain"][()]


def test_gains_within_1pc_and_1deg_of_the_truth(truth_run):
    """The gains applied to each integration of the calibrator group (bandpass x time gains
    interpolated to it, as stored in cal.zarr) against the true bandpass x gain, both referred
    to the reference antenna's phase per integration, channel and polarization: RMS error below
    1 % in amplitude and 1 deg in phase over every live antenna's unflagged gains, and
    consistent with the solver's own SNR. The bandpass alone misses the phase drift (RMS
    phase error above 1 deg), so the time gains are what makes this pass. Dead antennas are
    flagged whole, nothing else is flagged beyond the RFI-flagged channels."""
    gid = truth_run["groups"][0].group_id
    arrays, attrs = read_zarr(truth_run["root"] / "products" / gid / "cal.zarr")
    ants, bandpass, gain = _truth(truth_run["sim"], gid)
    assert np.array_equal(arrays["antenna_numbers"], ants) and attrs["time_gain_calmode"] == "ap"
    names = [str(a + 1) for a in ants]
    dead = np.isin(names, DEAD)
    k = names.index(attrs["refant"])
    true = bandpass[None] * gain[:, :, None, :]  # (time, ant, chan, pol)
    true = true * (np.conj(true[:, k:k + 1]) / np.abs(true[:, k:k + 1]))
    got = arrays["gains"][None] * arrays["time_gains"][:, :, None, :]
    flags = arrays["flags"][None] | arrays["time_gain_flags"][:, :, None, :]
    assert flags[:, dead].all()
    ok = ~flags & ~dead[None, :, None, None]
    assert ok[:, ~dead].mean() > 0.95
    snr = np.broadcast_to(arrays["snr"][None], got.shape)[ok]

    def errors(g):
        ratio = g[ok] / true[ok]
        return (np.sqrt(np.mean((np.abs(ratio) - 1) ** 2)), np.degrees(np.sqrt(np.mean(np.angle(ratio) ** 2))),
                np.abs(g[ok] - true[ok]) / np.abs(true[ok]))

    amp_rms, phase_rms, rel = errors(got)
    assert amp_rms < 0.01 and phase_rms < 1.0, (amp_rms, phase_rms)
    assert np.median(rel * snr) < 1.5
    _, phase_rms_bandpass_only, _ = errors(np.broadcast_to(arrays["gains"][None], got.shape))
    assert phase_rms_bandpass_only > 1.0


def test_time_gains_registered_and_folded_into_the_next_group(truth_run):
    """The calibrator group registers a bandpass and a time-gains table of one set, each with
    its configured validity; the field group, without a calibrator, gets that bandpass with the set's last time
    gain folded in."""
    from contimg.state.calregistry import CalRegistry

    cal_gid, field_gid = (g.group_id for g in truth_run["groups"])
    reg = CalRegistry(truth_run["root"] / "state" / "cal_registry.sqlite3")
    rows = {r["cal_type"]: r for r in reg.rows() if r["set_name"] == cal_gid}
    reg.close()
    assert set(rows) == {"bandpass", "gains"} and all(r["status"] == "active" for r in rows.values())
    cc = truth_run["cfg"].calibrate
    assert rows["bandpass"]["valid_end_mjd"] - rows["bandpass"]["mid_mjd"] == pytest.approx(cc.bandpass_validity_hours / 24)
    assert rows["gains"]["valid_end_mjd"] - rows["gains"]["mid_mjd"] == pytest.approx(cc.gain_validity_hours / 24)
    _, attrs = read_zarr(truth_run["root"] / "products" / field_gid / "cal.zarr")
    assert attrs["solutions"] == [{"set_name": cal_gid, "weight": 1.0, "time_gains": True}]


def test_field_group_from_the_registry_images_fluxes_within_3pc(truth_run):
    """The field group, calibrated from the registry only: every truth source above 50 sigma in
    its primary-beam-corrected image within 3 % of its true flux (at 50 sigma the noise adds
    at most 2 %), positions within 0.1 beam."""
    from contimg.sim.truthcheck import measure_truth_sources

    gid = truth_run["groups"][1].group_id
    rows, _ = measure_truth_sources(products_dir=truth_run["root"] / "products" / gid, group_id=gid,
                                    truth_path=truth_run["sim"] / "truth.h5")
    strong = [r for r in rows if r["snr"] >= 50]
    assert len(strong) >= 10
    bad = [(r["name"], round(r["ratio"], 4), round(r["snr"])) for r in strong
           if abs(r["ratio"] - 1) >= 0.03 or r["offset_beam"] >= 0.1]
    assert not bad, bad


def test_fitted_delays_match_the_truth(truth_run):
    """The delays fitted to the bandpass (``calibrate.solve_delay``, stored with the bandpass as
    ``delay_ns``) against the slope of the true bandpass phase (a straight line in frequency in
    the simulator, fitted here with numpy's polyfit), both relative to the reference antenna:
    within 0.02 ns (the phase noise of SNR-200 channels gives ~0.002 ns)."""
    gid = truth_run["groups"][0].group_id
    arrays, attrs = read_zarr(truth_run["root"] / "cal" / f"{gid}.zarr")
    ants, bandpass, _ = _truth(truth_run["sim"], gid)
    with h5py.File(truth_run["sim"] / "truth.h5") as f:
        freq = f["freq_hz"][()]
    names = [str(a + 1) for a in ants]
    live = ~np.isin(names, DEAD)
    k = names.index(attrs["refant"])
    phase = np.unwrap(np.angle(bandpass * np.conj(bandpass[k:k + 1])), axis=1)  # (ant, chan, pol)
    true_ns = np.zeros((len(ants), 2))
    for a in np.flatnonzero(live):
        for p in range(2):
            true_ns[a, p] = np.polyfit(freq, phase[a, :, p], 1)[0] / (2 * np.pi) * 1e9
    got_ns = np.asarray(attrs["delay_ns"])
    assert got_ns.shape == (len(ants), 2)
    assert np.abs(true_ns[live] - true_ns[k]).max() > 0.5  # delays worth fitting (up to ~1.3 ns here)
    assert np.abs(got_ns[live] - true_ns[live]).max() < 0.02

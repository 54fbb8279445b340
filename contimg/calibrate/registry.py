"""Which calibration solution a group gets: the registry's rows (`contimg.state.calregistry`
stores them) and the pure functions over them.

A solve on a calibrator transit writes its gains to ``<root>/cal/<group_id>.zarr`` (atomically,
`contimg.io.store.write_zarr`) and leaves registration rows in ``GroupWork.cal_registrations``; the
service shell registers it (the stages touch no database, cluster workers never open one). A
solution that fails the solution-quality gate (`contimg.qa.gates.solution_quality`) is
registered as ``rejected``: kept for diagnosis, never applied. Otherwise it is ``active``, valid
for ``[mid - validity, mid + validity]`` with the validity of its type from the config
(`validity_hours`). ``superseded`` marks a table an operator retired (`CalRegistry.set_status`);
the lookup ignores it too.

A solve registers two tables of one set (the group solved on): its ``bandpass`` and its
time-dependent ``gains`` (in ``<root>/cal/gains/``), each with its own validity. A group gets the
active bandpasses whose window contains its mid-time and whose channels match
(`select_solutions`), each with its set's time gain nearest the group folded in where that
set's gains table is valid too (`solution_for`): two that bracket the mid-time are interpolated
in time (`interpolate_gains`), otherwise the nearest one is applied. The age of what was applied gives
a staleness level (`staleness_level`) that the calibrate gate and the alerts report.

Columns of ``caltables`` (primary key ``(set_name, cal_type)``, so registering the same group's
solution twice updates its row): set_name (the group solved on), path (the Zarr table), cal_type
(``bandpass``: one gain per antenna, channel and polarization over the group, the gain folded
in; ``gains``: time-dependent gains), apply_order, calibrator, refant, created_at (unix s),
valid_start_mjd, valid_end_mjd, mid_mjd, status, params_json (solver parameters), quality_json
(the quality gate's metrics and reasons), group_id, n_antennas, n_channels, freq_min_hz,
freq_max_hz.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from contimg.calibrate.apply import fold_time_gains
from contimg.calibrate.solution import GainSolution, TimeGains

__all__ = ["CAL_TYPES", "APPLY_ORDER", "STALENESS_LEVELS", "validity_hours", "registration_row",
           "select_solutions", "interpolate_gains", "staleness_level", "solution_for"]

CAL_TYPES = ("bandpass", "gains")
APPLY_ORDER = {"bandpass": 0, "gains": 1}
STALENESS_LEVELS = ("fresh", "aging", "stale", "critical")
MJD_JD = 2400000.5


def validity_hours(*, cal_type: str, bandpass_hours: float, gain_hours: float) -> float:
    """The half-width (hours) of a table's validity window, by type."""
    if cal_type == "bandpass":
        return float(bandpass_hours)
    if cal_type == "gains":
        return float(gain_hours)
    raise ValueError(f"unknown calibration table type {cal_type!r} (one of {CAL_TYPES})")


def registration_row(*, sol: GainSolution | TimeGains, path: Path, cal_type: str, validity_h: float, passed: bool,
                     params: dict, quality: dict) -> dict:
    """The ``caltables`` row of a solution just solved and written to ``path`` (a time gains
    table has no channels: n_channels 0)."""
    mid_mjd = float(sol.mid_jd - MJD_JD)
    freq = np.asarray(getattr(sol, "freq_hz", ()), float)
    return {"set_name": sol.group_id, "path": str(path), "cal_type": cal_type, "apply_order": APPLY_ORDER[cal_type],
            "calibrator": sol.calibrator, "refant": str(sol.refant), "created_at": time.time(),
            "valid_start_mjd": mid_mjd - validity_h / 24.0, "valid_end_mjd": mid_mjd + validity_h / 24.0,
            "mid_mjd": mid_mjd, "status": "active" if passed else "rejected",
            "params_json": json.dumps(params, default=float), "quality_json": json.dumps(quality, default=float),
            "group_id": sol.group_id, "n_antennas": int(np.size(sol.antenna_numbers)), "n_channels": int(freq.size),
            "freq_min_hz": float(freq.min()) if freq.size else 0.0,
            "freq_max_hz": float(freq.max()) if freq.size else 0.0}


def _channels_match(row: dict, freq_hz: np.ndarray, rtol: float = 1e-9) -> bool:
    freq = np.asarray(freq_hz, float)
    return (int(row["n_channels"]) == freq.size and freq.size > 0
            and np.isclose(row["freq_min_hz"], freq.min(), rtol=rtol) and np.isclose(row["freq_max_hz"], freq.max(), rtol=rtol))


def _valid_at(row: dict, mid_mjd: float) -> bool:
    return row["status"] == "active" and row["valid_start_mjd"] <= mid_mjd <= row["valid_end_mjd"]


def select_solutions(*, rows: list[dict], mid_mjd: float, freq_hz: np.ndarray) -> list[tuple[dict, float]]:
    """Which registered tables a group at ``mid_mjd`` gets, and their weights.

    Only ``active`` rows whose validity window contains ``mid_mjd`` (bounds included) and whose
    channels match ``freq_hz`` count. Two of them that bracket ``mid_mjd`` (the latest at or
    before it, the earliest after it) → ``[(before, 1 - w), (after, w)]`` with
    ``w = (mid - t_before) / (t_after - t_before)``; otherwise the nearest in time (the newest
    registration among equals) → ``[(row, 1.0)]``; nothing valid → ``[]``.
    """
    ok = [r for r in rows if r.get("cal_type", "bandpass") == "bandpass" and _valid_at(r, mid_mjd)
          and _channels_match(r, freq_hz)]
    if not ok:
        return []
    # latest solution time first, then the newest registration: the first of each side is the one to use
    order = sorted(ok, key=lambda r: (r["mid_mjd"], r["created_at"]), reverse=True)
    before = [r for r in order if r["mid_mjd"] <= mid_mjd]
    after = sorted([r for r in ok if r["mid_mjd"] > mid_mjd], key=lambda r: (r["mid_mjd"], -r["created_at"]))
    if before and after:
        b, a = before[0], after[0]
        w = (mid_mjd - b["mid_mjd"]) / (a["mid_mjd"] - b["mid_mjd"])
        return [(b, 1.0 - w), (a, w)]
    best = min(order, key=lambda r: abs(r["mid_mjd"] - mid_mjd))  # min keeps the first (newest) of equals
    return [(best, 1.0)]


def interpolate_gains(*, t_mjd: float, t0_mjd: float, gains0: np.ndarray, flags0: np.ndarray, t1_mjd: float,
                      gains1: np.ndarray, flags1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gains at ``t_mjd`` linearly interpolated in time between two solutions at ``t0_mjd`` <
    ``t1_mjd``: amplitude and phase separately, the phase unwrapped between the two (the
    change from ``gains0`` to ``gains1`` taken in (-π, π]); a gain flagged in either is flagged.

    gains0, gains1: (nant, nchan, npol) complex (the same antennas and channels); flags0,
    flags1: (nant, nchan, npol) bool. Computed in float64. Returns (gains complex64, flags bool),
    both (nant, nchan, npol); a flagged gain is 0.
    """
    if not t1_mjd > t0_mjd:
        raise ValueError(f"need t0 < t1, got {t0_mjd} and {t1_mjd}")
    if gains0.shape != gains1.shape:
        raise ValueError(f"gain shapes differ: {gains0.shape} and {gains1.shape}")
    w = (float(t_mjd) - float(t0_mjd)) / (float(t1_mjd) - float(t0_mjd))
    g0, g1 = np.asarray(gains0, np.complex128), np.asarray(gains1, np.complex128)
    amp = (1.0 - w) * np.abs(g0) + w * np.abs(g1)
    dphase = np.angle(g1 * np.conj(g0))  # phase(g1) - phase(g0), unwrapped to (-pi, pi]
    phase = np.angle(g0) + w * dphase
    flags = np.asarray(flags0, bool) | np.asarray(flags1, bool) | (np.abs(g0) == 0) | (np.abs(g1) == 0)
    gains = np.where(flags, 0, amp * np.exp(1j * phase)).astype(np.complex64)
    return gains, flags


def staleness_level(*, age_hours: float | None, aging_hours: float, stale_hours: float, critical_hours: float) -> str:
    """``fresh`` (age ≤ aging_hours), ``aging`` (≤ stale_hours), ``stale`` (≤ critical_hours) or
    ``critical`` (older, or None: no solution applied). Age: |group mid − solution mid|."""
    if age_hours is None or not np.isfinite(age_hours):
        return "critical"
    age = abs(float(age_hours))
    if age <= aging_hours:
        return "fresh"
    if age <= stale_hours:
        return "aging"
    if age <= critical_hours:
        return "stale"
    return "critical"


def solution_for(*, rows: list[dict], mid_jd: float, freq_hz: np.ndarray, load, load_gains=None) -> GainSolution | None:
    """The solution a group at ``mid_jd`` gets from registry ``rows`` (`select_solutions` on
    the bandpass rows): one table loaded with ``load(path)``, or two interpolated to
    ``mid_jd``. A chosen bandpass whose set also has an active ``gains`` row valid at
    ``mid_jd`` (loaded with ``load_gains(path)``) has the time gain of the interval nearest
    ``mid_jd`` folded in (`contimg.calibrate.fold_time_gains`), and then counts from that
    interval's time. The result's ``mid_jd``, ``group_id`` and ``calibrator`` are the nearest
    table's (the age is counted from it); its ``meta["solutions"]`` lists the sets applied,
    their weights and whether time gains were folded in. Two tables whose antennas or
    reference antennas differ are not interpolated (their phases are not comparable): the
    nearest is used."""
    mid_mjd = float(mid_jd - MJD_JD)
    chosen = select_solutions(rows=rows, mid_mjd=mid_mjd, freq_hz=freq_hz)
    gain_rows = {r["set_name"]: r for r in rows if r.get("cal_type") == "gains" and _valid_at(r, mid_mjd)}
    sols = []
    for r, w in chosen:
        s = load(Path(r["path"]))
        if not (s.freq_hz.shape == np.shape(freq_hz) and np.allclose(s.freq_hz, freq_hz)):
            continue
        t_mjd, folded = r["mid_mjd"], False
        if load_gains is not None and r["set_name"] in gain_rows:
            tg = load_gains(Path(gain_rows[r["set_name"]]["path"]))
            if np.array_equal(tg.antenna_numbers, s.antenna_numbers) and tg.refant == s.refant:
                s = fold_time_gains(s, tg, mid_jd=mid_jd)
                t_mjd, folded = s.mid_jd - MJD_JD, True
        sols.append((s, w, r, t_mjd, folded))
    if not sols:
        return None
    listed = [{"set_name": r["set_name"], "weight": float(w), "time_gains": folded} for _, w, r, _, folded in sols]
    if (len(sols) == 2 and np.array_equal(sols[0][0].antenna_numbers, sols[1][0].antenna_numbers)
            and sols[0][0].refant == sols[1][0].refant and sols[1][3] > sols[0][3]):
        (s0, _, r0, t0, _), (s1, _, r1, t1, _) = sols
        t = min(max(mid_mjd, t0), t1)  # a folded time gain can lie past the group's mid-time
        gains, flags = interpolate_gains(t_mjd=t, t0_mjd=t0, gains0=s0.gains, flags0=s0.flags,
                                         t1_mjd=t1, gains1=s1.gains, flags1=s1.flags)
        w1 = (t - t0) / (t1 - t0)
        near = s0 if w1 <= 0.5 else s1
        snr = np.minimum(s0.snr, s1.snr)
        calibrator = s0.calibrator if s0.calibrator == s1.calibrator else f"{s0.calibrator}+{s1.calibrator}"
        listed[0]["weight"], listed[1]["weight"] = float(1 - w1), float(w1)
        return GainSolution(near.antenna_numbers, near.freq_hz, gains, flags, snr, near.refant, near.mid_jd, calibrator,
                            near.group_id, 0, {"solutions": listed})
    k = min(range(len(sols)), key=lambda k: abs(sols[k][3] - mid_mjd))
    sol = sols[k][0]
    sol.meta = {**sol.meta, "solutions": [listed[k] | {"weight": 1.0}]}
    return sol

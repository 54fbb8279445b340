"""Exports of a gain solution for other tools: a CASA calibration table (`write_casa_caltable`,
python-casacore, no CASA installation) and a pyuvdata `UVCal` (`write_uvcal`, calh5 or calfits).

contimg's solution is one complex gain per antenna, channel and polarization over the whole group
(bandpass and gain in one), applied as ``V_ij /= g_i conj(g_j)`` on the baseline (ant1=i, ant2=j).

**The CASA table is a "B Jones" table**, not "G Jones": a G table holds one value per antenna,
spectral window and receptor (CPARAM of one channel), a B table one per channel, which is what
contimg solves. CASA applies a B table as ``V_ij^corrected = V_ij / (B_i conj(B_j))`` on the row
(ANTENNA1=i, ANTENNA2=j), with one time (the group's mid-time): whatever the time interpolation
asked of applycal, the one solution applies to every integration; the table's channels are the
group's, so frequency interpolation is the identity. Apply it with ``interp="linear,linearflag"``
(the interpolation checked): with CASA's default ``"linear"`` a gain flagged in some channels is
interpolated from its neighbours instead of flagging those channels, as contimg does (measured in
`tools/validate_caltable.py`).

**Conventions** (`casa_gains`, the one place they are handled). contimg's ``export-ms`` writes the
visibilities as contimg holds them: row (ANTENNA1=i, ANTENNA2=j) holds contimg's ``V_ij`` (no
conjugation, uvw not flipped: pyuvdata's MS writer with ``flip_conj=False``; ANTENNA1 is the
antenna's position in the telescope's antenna list, which is its number). CASA's applycal divides
that row by ``B_i conj(B_j)``, contimg divides ``V_ij`` by ``g_i conj(g_j)``: the same operation when
``CPARAM = g``, **unconjugated**. This was verified with CASA 6.7's applycal on a contimg MS
(`tools/validate_caltable.py`, `docs/benchmarks/caltable.md`: ``CPARAM = g`` reproduces contimg's
CORRECTED_DATA within float32; ``CPARAM = conj(g)`` does not). The conjugation noted for NGC5921
(`docs/architecture.md`) belongs to data that pyuvdata *read* from UVFITS or a CASA-written MS
(pyuvdata conjugates those on read, and its own MS writer conjugates back by default,
``flip_conj=True``, which is why pyuvdata's `UVCal.read_ms_cal` / ``write_ms_cal`` conjugate gains);
contimg's MS export does neither. So: the exported table applies to contimg's exported MS (or any
MS holding contimg's visibilities unconjugated on contimg's (ant1, ant2) rows); an MS written by pyuvdata
with its default ``flip_conj=True`` needs the conjugate table (``conjugate=True``).

The receptor axis of CPARAM is the feed (X then Y, or R then L): contimg's XX gain is receptor X's
gain, its YY gain receptor Y's (`_receptor_order`).

The UVCal has ``gain_convention="divide"`` (``V_true = V_obs / (g_i conj(g_j))`` on pyuvdata's
(ant_1, ant_2) = contimg's (ant1, ant2)) and the gains unconjugated: pyuvdata's ``uvcalibrate``
of the group's `UVData` (`contimg.interop.ms.chunk_to_uvdata`) gives contimg's apply
(`tests/test_caltable.py`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contimg.calibrate import GainSolution

__all__ = ["casa_gains", "write_casa_caltable", "write_uvcal", "solution_uvcal", "stored_solution",
           "stored_time_gains", "PerIntegration",
           "CALTABLE_SUFFIXES", "UVCAL_SUFFIXES"]

CALTABLE_SUFFIXES = (".bcal", ".cal", ".tb")
UVCAL_SUFFIXES = (".calh5", ".calfits")
MJD_JD = 2400000.5
DISH_DIAMETER_M = 4.65
# feed (receptor) index of each diagonal AIPS polarization code
_RECEPTOR = {-5: 0, -6: 1, -1: 0, -2: 1}
_POL_BASIS = {-5: "LINEAR", -6: "LINEAR", -1: "CIRCULAR", -2: "CIRCULAR"}


def casa_gains(gains: np.ndarray, *, conjugate: bool = False) -> np.ndarray:
    """contimg's gains as CASA's CPARAM for contimg's exported MS: the same values (see the
    module's docstring); ``conjugate=True`` for an MS whose visibilities are contimg's conjugated
    (pyuvdata's MS writer with its default ``flip_conj=True``)."""
    g = np.asarray(gains, np.complex64)
    return np.conj(g) if conjugate else g.copy()


def telescope_from_info(info: dict):
    """The pyuvdata ``Telescope`` of a `contimg.pipeline.generic.telescope_info` dict (a file
    group's array, kept with its calibration tables)."""
    from astropy import units as u
    from astropy.coordinates import EarthLocation
    from pyuvdata import Telescope

    loc = EarthLocation.from_geocentric(*info["location_ecef_m"], unit=u.m)
    diam = info.get("antenna_diameters_m")
    circular = set(info.get("pols") or (-5, -6)) <= {-1, -2, -3, -4}
    return Telescope.new(name=info["name"], location=loc, antenna_positions=np.asarray(info["antenna_positions_m"]),
                         antenna_names=list(info["antenna_names"]), antenna_numbers=list(info["antenna_numbers"]),
                         antenna_diameters=None if diam is None else np.asarray(diam, float),
                         feeds=["r", "l"] if circular else ["x", "y"], x_orientation=None if circular else "east",
                         mount_type="alt-az", update_from_known=False)


def solution_telescope(sol: GainSolution):
    """The array ``sol`` was solved on: a file group's (``sol.meta["telescope_info"]``), else
    contimg's DSA-110 (as its UVData/MS exports write it)."""
    info = sol.meta.get("telescope_info")
    if info:
        return telescope_from_info(info)
    from contimg.interop.ms import _telescope

    return _telescope()


def solution_pols(sol: GainSolution, pols=None) -> tuple[int, ...]:
    """``pols`` when given; else the polarization codes ``sol`` was solved on (a file group's
    ``telescope_info``), else XX, YY."""
    if pols is not None:
        return tuple(int(p) for p in pols)
    return tuple((sol.meta.get("telescope_info") or {}).get("pols") or (-5, -6))


@dataclass(frozen=True)
class _Array:
    """The ANTENNA subtable's rows (row = antenna number, gaps as flagged unnamed rows)."""

    name: str
    numbers: np.ndarray  # (nrow,) = arange(nrow)
    names: np.ndarray  # (nrow,) str
    ecef_m: np.ndarray  # (nrow, 3)
    diameters_m: np.ndarray  # (nrow,)
    present: np.ndarray  # (nrow,) bool


def _array_rows(sol: GainSolution) -> _Array:
    """A file group's array (``sol.meta["telescope_info"]``), else contimg's DSA-110 stations."""
    info = sol.meta.get("telescope_info")
    if not info:
        from contimg.sky.telescope import stations

        st = stations()
        n = st.numbers.size
        return _Array("DSA-110", np.asarray(st.numbers), np.asarray(st.names), np.asarray(st.ecef_m, np.float64),
                      np.full(n, DISH_DIAMETER_M), np.ones(n, bool))
    numbers = np.asarray(info["antenna_numbers"], int)
    n = int(numbers.max()) + 1
    names = np.array([""] * n, dtype=object)
    ecef = np.zeros((n, 3))
    diam = np.zeros(n)
    present = np.zeros(n, bool)
    names[numbers] = info["antenna_names"]
    ecef[numbers] = np.asarray(info["antenna_positions_m"], float) + np.asarray(info["location_ecef_m"], float)
    if info.get("antenna_diameters_m"):
        diam[numbers] = info["antenna_diameters_m"]
    present[numbers] = True
    return _Array(str(info["name"]), np.arange(n), names.astype(str), ecef, diam, present)


def _receptor_order(pols) -> np.ndarray:
    """Positions in the solution's polarization axis of receptors 0, 1 (X, Y or R, L)."""
    pols = [int(p) for p in pols]
    bad = [p for p in pols if p not in _RECEPTOR]
    if bad or len({_RECEPTOR[p] for p in pols}) != len(pols):
        raise ValueError(f"polarizations {pols}: a gain table needs one diagonal correlation per feed "
                         "(XX and YY, or RR and LL)")
    return np.argsort([_RECEPTOR[p] for p in pols], kind="stable")


def _refant_number(sol: GainSolution, names: np.ndarray, numbers: np.ndarray) -> int:
    hit = np.flatnonzero(np.asarray(names).astype(str) == str(sol.refant))
    return int(numbers[hit[0]]) if hit.size else -1


def _chan_width(freq_hz: np.ndarray, chan_width_hz: float | None) -> float:
    if chan_width_hz is not None:
        return float(chan_width_hz)
    return float(np.median(np.diff(freq_hz))) if freq_hz.size > 1 else 1.0


def _main_desc():
    from casacore import tables

    def sca(name, vtype, keywords=None):
        return tables.makescacoldesc(name, 0 if vtype != "double" else 0.0, valuetype=vtype,
                                     keywords=keywords or {})

    def arr(name, vtype):
        return tables.makearrcoldesc(name, 0, valuetype=vtype, ndim=-1)

    cols = [
        sca("TIME", "double", {"QuantumUnits": ["s"], "MEASINFO": {"type": "epoch", "Ref": "UTC"}}),
        sca("FIELD_ID", "int"), sca("SPECTRAL_WINDOW_ID", "int"), sca("ANTENNA1", "int"), sca("ANTENNA2", "int"),
        sca("INTERVAL", "double", {"QuantumUnits": ["s"]}), sca("SCAN_NUMBER", "int"), sca("OBSERVATION_ID", "int"),
        arr("CPARAM", "complex"), arr("PARAMERR", "float"), arr("FLAG", "boolean"), arr("SNR", "float"),
        arr("WEIGHT", "float"),
    ]
    return tables.maketabdesc(cols)


def _subtables_from_ms(tmp: Path, ms: Path, freq_hz: np.ndarray) -> None:
    from casacore import tables

    for name in ("ANTENNA", "FIELD", "SPECTRAL_WINDOW", "OBSERVATION"):
        with tables.table(f"{ms}/{name}", ack=False) as sub:
            sub.copy(str(tmp / name), deep=True, valuecopy=True).close()
    with tables.table(str(tmp / "SPECTRAL_WINDOW"), ack=False) as spw:
        chan = np.asarray(spw.getcell("CHAN_FREQ", 0), np.float64)
    if chan.shape != freq_hz.shape or not np.allclose(np.sort(chan), freq_hz, rtol=0, atol=1.0):
        raise ValueError(f"{ms}: its spectral window's channels do not match the solution's")
    with tables.default_ms_subtable("HISTORY", str(tmp / "HISTORY")):
        pass


def _subtables_built(tmp: Path, *, sol: GainSolution, chan_width_hz: float, time_mjd_s: float,
                     interval_s: float, field_dir_rad: tuple[float, float]) -> None:
    """ANTENNA, FIELD, SPECTRAL_WINDOW, OBSERVATION, HISTORY as contimg's MS export writes them
    (antenna rows in the telescope's order: row = antenna number)."""
    from casacore import tables

    st = _array_rows(sol)
    n = st.numbers.size
    with tables.default_ms_subtable("ANTENNA", str(tmp / "ANTENNA")) as t:
        t.addrows(n)
        t.putcol("NAME", list(st.names))
        t.putcol("STATION", list(st.names))
        t.putcol("TYPE", ["GROUND-BASED"] * n)
        t.putcol("MOUNT", ["ALT-AZ"] * n)
        t.putcol("POSITION", st.ecef_m)
        t.putcol("OFFSET", np.zeros((n, 3)))
        t.putcol("DISH_DIAMETER", st.diameters_m)
        t.putcol("FLAG_ROW", ~st.present)
    with tables.default_ms_subtable("FIELD", str(tmp / "FIELD")) as t:
        t.addrows(1)
        d = np.array([[list(field_dir_rad)]], np.float64)  # (row, poly, 2)
        for c in ("DELAY_DIR", "PHASE_DIR", "REFERENCE_DIR"):
            t.putcol(c, d)
        t.putcol("NAME", [sol.calibrator or "calibrator"])
        t.putcol("CODE", [""])
        t.putcol("TIME", np.array([time_mjd_s]))
        t.putcol("NUM_POLY", np.zeros(1, np.int32))
        t.putcol("SOURCE_ID", np.full(1, -1, np.int32))
        t.putcol("FLAG_ROW", np.zeros(1, bool))
    nchan = sol.freq_hz.size
    with tables.default_ms_subtable("SPECTRAL_WINDOW", str(tmp / "SPECTRAL_WINDOW")) as t:
        t.addrows(1)
        width = np.full((1, nchan), chan_width_hz)
        t.putcol("CHAN_FREQ", np.asarray(sol.freq_hz, np.float64)[None])
        for c in ("CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION"):
            t.putcol(c, width)
        t.putcol("NUM_CHAN", np.array([nchan], np.int32))
        t.putcol("REF_FREQUENCY", np.array([float(sol.freq_hz[0])]))
        t.putcol("TOTAL_BANDWIDTH", np.array([abs(chan_width_hz) * nchan]))
        t.putcol("MEAS_FREQ_REF", np.array([5], np.int32))  # TOPO
        t.putcol("NET_SIDEBAND", np.array([1], np.int32))
        t.putcol("NAME", ["contimg"])
        t.putcol("FREQ_GROUP", np.zeros(1, np.int32))
        t.putcol("FREQ_GROUP_NAME", [""])
        t.putcol("IF_CONV_CHAIN", np.zeros(1, np.int32))
        t.putcol("FLAG_ROW", np.zeros(1, bool))
    with tables.default_ms_subtable("OBSERVATION", str(tmp / "OBSERVATION")) as t:
        t.addrows(1)
        t.putcol("TIME_RANGE", np.array([[time_mjd_s - interval_s / 2, time_mjd_s + interval_s / 2]]))
        t.putcol("TELESCOPE_NAME", [st.name])
        t.putcol("OBSERVER", ["contimg"])
        t.putcol("PROJECT", [f"contimg group {sol.group_id}"])
        t.putcol("SCHEDULE_TYPE", [""])
        t.putcol("RELEASE_DATE", np.array([0.0]))
        t.putcol("FLAG_ROW", np.zeros(1, bool))
    with tables.default_ms_subtable("HISTORY", str(tmp / "HISTORY")):
        pass


def write_casa_caltable(path: Path, *, sol: GainSolution, pols=None, chan_width_hz: float | None = None,
                        interval_s: float = 0.0, ms: Path | None = None, ms_name: str = "",
                        field_dir_rad: tuple[float, float] | None = None, conjugate: bool = False,
                        time_gains: "PerIntegration | None" = None) -> Path:
    """``sol`` as a CASA "B Jones" calibration table at ``path`` (replaced whole: written under a
    temporary name, then renamed). One row per antenna of the telescope (ANTENNA1 = its row in the
    ANTENNA subtable = its number; ANTENNA2 the reference antenna, -1 if unknown); antennas
    without a solution are flagged with CPARAM 1. pols: the solution's polarization codes (XX,
    YY by default). ``ms``: copy ANTENNA, FIELD, SPECTRAL_WINDOW, OBSERVATION from that MS (its
    channels must be the solution's); otherwise they are built as contimg's MS export writes them
    (``field_dir_rad``: the FIELD direction, default the calibrator's catalogue position).
    ``conjugate``: see `casa_gains`. PARAMERR is |g| / SNR (contimg's SNR), 0 where SNR is 0.
    ``time_gains``: the time gains applied per integration (`PerIntegration`): then one row per
    integration and antenna (time-major) holding bandpass x time gain at that integration's
    TIME, INTERVAL the integration time (CASA's linear interpolation in time then gives each
    integration its own gains)."""
    from casacore import tables

    path = Path(path)
    st = _array_rows(sol)
    pols = solution_pols(sol, pols)
    freq = np.asarray(sol.freq_hz, np.float64)
    if np.any(np.diff(freq) <= 0):
        raise ValueError("the solution's frequencies must be ascending")
    order = _receptor_order(pols)
    polbasis = _POL_BASIS[int(pols[0])]
    width = _chan_width(freq, chan_width_hz)
    time_mjd_s = (float(sol.mid_jd) - MJD_JD) * 86400.0
    nant, nchan, ncorr = st.numbers.size, freq.size, order.size
    lookup = {int(a): k for k, a in enumerate(sol.antenna_numbers)}
    if time_gains is None:
        times_s, per_time = np.array([time_mjd_s]), [(sol.gains, sol.flags)]
    else:
        times_s = (np.asarray(time_gains.time_jd, float) - MJD_JD) * 86400.0
        if not interval_s and times_s.size > 1:
            interval_s = float(np.median(np.diff(times_s)))
        per_time = [(sol.gains * time_gains.gains[t][:, None, :], sol.flags | time_gains.flags[t][:, None, :])
                    for t in range(times_s.size)]
    ntimes = times_s.size
    cparam = np.ones((ntimes, nant, nchan, ncorr), np.complex64)
    flag = np.ones((ntimes, nant, nchan, ncorr), bool)
    snr = np.zeros((ntimes, nant, nchan, ncorr), np.float32)
    for t, (gains_t, flags_t) in enumerate(per_time):
        g = casa_gains(gains_t, conjugate=conjugate)[:, :, order]
        for row, number in enumerate(st.numbers):
            k = lookup.get(int(number))
            if k is not None:
                cparam[t, row], flag[t, row], snr[t, row] = g[k], flags_t[k][:, order], sol.snr[k][:, order]
    cparam, flag, snr = (a.reshape(ntimes * nant, nchan, ncorr) for a in (cparam, flag, snr))
    flag |= ~np.isfinite(cparam) | (cparam == 0)
    cparam[flag & ~np.isfinite(cparam)] = 1
    paramerr = np.where(snr > 0, np.abs(cparam) / np.where(snr > 0, snr, 1), 0).astype(np.float32)

    if field_dir_rad is None:
        field_dir_rad = (0.0, 0.0)
        if sol.calibrator:
            from contimg.sky.calibrators import calibrator_by_name

            try:
                c = calibrator_by_name(sol.calibrator)
                field_dir_rad = (c.ra_rad, c.dec_rad)
            except (KeyError, ValueError):
                pass

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    nrow = ntimes * nant
    with tables.table(str(tmp), _main_desc(), nrow=nrow, ack=False) as t:
        t.putinfo({"type": "Calibration", "subType": "B Jones", "readme": ""})
        t.putcol("TIME", np.repeat(times_s, nant))
        t.putcol("FIELD_ID", np.zeros(nrow, np.int32))
        t.putcol("SPECTRAL_WINDOW_ID", np.zeros(nrow, np.int32))
        t.putcol("ANTENNA1", np.tile(np.asarray(st.numbers, np.int32), ntimes))
        t.putcol("ANTENNA2", np.full(nrow, _refant_number(sol, st.names, st.numbers), np.int32))
        t.putcol("INTERVAL", np.full(nrow, float(interval_s)))
        t.putcol("SCAN_NUMBER", np.ones(nrow, np.int32))
        t.putcol("OBSERVATION_ID", np.zeros(nrow, np.int32))
        t.putcol("CPARAM", cparam)
        t.putcol("PARAMERR", paramerr)
        t.putcol("FLAG", flag)
        t.putcol("SNR", snr)
        # WEIGHT is left undefined, as CASA's bandpass and gaincal leave it
        if ms is not None:
            _subtables_from_ms(tmp, Path(ms), freq)
        else:
            _subtables_built(tmp, sol=sol, chan_width_hz=width, time_mjd_s=time_mjd_s, interval_s=interval_s,
                             field_dir_rad=field_dir_rad)
        t.putkeywords({"ParType": "Complex", "MSName": ms_name or (Path(ms).name if ms is not None else ""),
                       "VisCal": "B Jones", "PolBasis": polbasis,
                       # casacore keeps subtable references relative to the table: they survive the rename
                       **{name: f"Table: {(tmp / name).resolve()}" for name in
                          ("ANTENNA", "FIELD", "SPECTRAL_WINDOW", "HISTORY", "OBSERVATION")}})
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def solution_uvcal(sol: GainSolution, *, pols=None, chan_width_hz: float | None = None,
                   interval_s: float | None = None, time_range_jd: tuple[float, float] | None = None,
                   time_gains: "PerIntegration | None" = None):
    """``sol`` as a pyuvdata `UVCal`: gain, sky style (the calibrator as catalogue), per-channel
    gains unconjugated, ``gain_convention="divide"``; the telescope that of contimg's UVData/MS
    exports. One solution: at the group's mid-time (``time_array``; pyuvdata's ``uvcalibrate``
    then needs ``time_check=False`` for a group's several integrations), or valid over
    ``time_range_jd`` (start, end; ``uvcalibrate`` applies it to every integration inside).
    ``time_gains`` (`PerIntegration`): one solution per integration instead, bandpass x time
    gain, at the integrations' times (``uvcalibrate`` matches them exactly)."""
    from pyuvdata import UVCal

    tel = solution_telescope(sol)
    pols = solution_pols(sol, pols)
    freq = np.asarray(sol.freq_hz, np.float64)
    nums = np.asarray(sol.antenna_numbers, int)
    names = dict(zip(tel.antenna_numbers, tel.antenna_names))
    refant = str(sol.refant) if str(sol.refant) in set(map(str, tel.antenna_names)) else names[int(nums[0])]
    # (nant, nchan, npol) -> (nant, nfreq, ntime, njones)
    gains = np.asarray(sol.gains, np.complex128)[:, :, None, :]
    flags = np.asarray(sol.flags, bool)[:, :, None, :]
    quality = np.asarray(sol.snr, np.float64)[:, :, None, :]
    times = {"time_array": np.array([float(sol.mid_jd)]), "integration_time": float(interval_s or 1.0)}
    if time_gains is not None:
        tg = np.asarray(time_gains.gains, np.complex128).transpose(1, 0, 2)[:, None]  # (nant, 1, ntime, npol)
        gains = gains * tg
        flags = flags | np.asarray(time_gains.flags, bool).transpose(1, 0, 2)[:, None]
        quality = np.broadcast_to(quality, gains.shape).copy()
        t = np.asarray(time_gains.time_jd, float)
        times = {"time_array": t, "integration_time": np.full(t.size, float(
            interval_s or (np.median(np.diff(t)) * 86400.0 if t.size > 1 else 1.0)))}
    elif time_range_jd is not None:
        times = {"time_range": np.array([time_range_jd], np.float64),
                 "integration_time": np.array([np.ptp(time_range_jd) * 86400.0])}
    flags = flags | ~np.isfinite(gains)
    cal = UVCal.new(
        cal_style="sky", gain_convention="divide", cal_type="gain", jones_array=np.asarray(pols, int),
        telescope=tel, freq_array=freq, channel_width=_chan_width(freq, chan_width_hz),
        **times,
        ant_array=nums, ref_antenna_name=refant, sky_catalog=sol.calibrator or "contimg",
        update_telescope_from_known=False,
        data={"gain_array": np.where(flags, 1.0, gains), "flag_array": flags, "quality_array": quality},
        history=f"contimg gain solution of group {sol.group_id} on {sol.calibrator} (refant {sol.refant})")
    return cal


def write_uvcal(path: Path, *, sol: GainSolution, pols=None, chan_width_hz: float | None = None,
                interval_s: float | None = None, time_range_jd: tuple[float, float] | None = None,
                time_gains: "PerIntegration | None" = None) -> Path:
    """``sol`` (`solution_uvcal`) written by pyuvdata as calh5 (``.calh5``) or calfits
    (``.calfits``), under a temporary name then renamed."""
    path = Path(path)
    kinds = {".calh5": "write_calh5", ".calfits": "write_calfits"}
    if path.suffix not in kinds:
        raise ValueError(f"{path}: the name must end in .calh5 or .calfits")
    cal = solution_uvcal(sol, pols=pols, chan_width_hz=chan_width_hz, interval_s=interval_s,
                         time_range_jd=time_range_jd, time_gains=time_gains)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    tmp.unlink(missing_ok=True)
    getattr(cal, kinds[path.suffix])(str(tmp), clobber=True)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class PerIntegration:
    """The time gains applied to a group, one per integration (``cal.zarr``'s ``time_gains``)."""

    time_jd: np.ndarray  # (ntime,)
    gains: np.ndarray  # (ntime, nant, npol) complex64, the antennas of the bandpass applied with them
    flags: np.ndarray  # (ntime, nant, npol) bool


def stored_time_gains(group_id: str, *, root: Path) -> PerIntegration | None:
    """The time gains applied to each integration of group ``group_id`` (a group solved on its
    own calibrator with ``calibrate.gain_calmode`` on), or None."""
    from contimg.io.store import read_zarr

    arrays, _ = read_zarr(Path(root) / "products" / group_id / "cal.zarr")
    if "time_gains" not in arrays:
        return None
    return PerIntegration(arrays["time_jd"], arrays["time_gains"], arrays["time_gain_flags"])


def stored_solution(group_id: str, *, root: Path) -> tuple[GainSolution, dict]:
    """The solution applied to group ``group_id`` (its ``products/<group>/cal.zarr``): the stored
    solution of the group it was solved on (``cal/<solved_on>.zarr``) when that is there, else the
    applied arrays with the group's channels. Returns (solution, the cal.zarr attributes)."""
    from contimg.calibrate.storage import load_solution
    from contimg.io.store import read_zarr

    root = Path(root)
    cal_path = root / "products" / group_id / "cal.zarr"
    direct = root / "cal" / f"{group_id}.zarr"
    if not cal_path.is_dir():
        if direct.is_dir():  # a solution solved on this group, never applied (or its products gone)
            return load_solution(direct), {}
        raise FileNotFoundError(f"{cal_path}: group {group_id} has no calibration stored; process it first")
    arrays, attrs = read_zarr(cal_path)
    if not attrs.get("applied"):
        raise FileNotFoundError(f"{cal_path}: no gains were applied to group {group_id} (no calibrator and no "
                                "valid solution)")
    solved = root / "cal" / f"{attrs['solved_on']}.zarr"
    if not solved.is_dir():
        raise FileNotFoundError(f"{solved}: the solution applied to group {group_id} is not stored")
    sol = load_solution(solved)
    derived = [s for s in attrs.get("solutions", []) if s.get("time_gains")] or len(attrs.get("solutions", [])) > 1
    if derived:  # interpolated between sets, or a set's time gain folded in: the applied arrays are the solution
        if not np.array_equal(sol.antenna_numbers, arrays["antenna_numbers"]):
            raise ValueError(f"{solved} has other antennas than the gains applied to group {group_id} ({cal_path})")
        return GainSolution(arrays["antenna_numbers"], sol.freq_hz, arrays["gains"], arrays["flags"], arrays["snr"],
                            attrs["refant"], float(attrs.get("solution_mid_jd") or sol.mid_jd), attrs["calibrator"],
                            attrs["solved_on"], 0, {"solutions": attrs.get("solutions", [])}), attrs
    if not (np.array_equal(sol.antenna_numbers, arrays["antenna_numbers"])
            and np.array_equal(sol.gains, arrays["gains"]) and np.array_equal(sol.flags, arrays["flags"])):
        raise ValueError(f"{solved} differs from the gains applied to group {group_id} ({cal_path})")
    return sol, attrs

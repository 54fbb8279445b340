"""`contimg simulate`: DSA-110 groups with a known sky, gains, noise and RFI, plus ``truth.h5``
and ``catalogue.csv`` (the simulated sky as a source catalogue, for QA cross-match and photometry).

Truth file (HDF5, beside the data), in the pipeline's conventions (ascending frequency):
- attrs: ``pointing_dec_rad`` (apparent, HA-Dec frame), ``calibrator``, ``sigma_jy`` (thermal
  noise per real/imag part of one cross-correlation), ``config`` (JSON);
- attr ``sky_mode``: ``fields`` (faint sources around each group's field centre, ``group`` = that
  group) or ``strip`` (one fixed sky spread over the whole strip the groups drift through, with a
  margin beyond its ends; ``group`` 0 for all of them);
- ``sources/{name,ra_rad,dec_rad,flux_jy,spectral_index,group}`` (group -1: listed calibrators,
  -2: the variable source, -3: the transient) with attr ``ref_freq_hz``; ``antenna_numbers`` (nant,), ``ant1``/``ant2`` (nbl,), ``freq_hz`` (nchan,);
- ``bandpass`` (nant, nchan, npol) complex128;
- ``variable/flux_jy`` (ngroups,) with attr ``name``: the light curve of the variable source, if
  one was asked for (its ``sources`` entry, group -2, holds the mean flux);
- ``transient/flux_jy`` (ngroups,) with attr ``name``: the transient's flux in each group (0 but
  in ``simulate.transient_group``), if one was asked for (``sources`` entry: group -3, mean flux);
- ``groups/<group_id>/``: ``time_jd`` (ntime,), ``gain`` (ntime, nant, npol) complex128,
  ``rfi_mask`` (ntime, nbl, nchan) bool, ``rfi_amp_sigma`` (same shape, float32: the RFI
  amplitude in thermal sigmas), attrs ``rfi_events`` (JSON), ``has_calibrator``,
  ``files`` (JSON list of names).
The visibility of baseline (a1, a2) is ``g[a1] * conj(g[a2]) * sky + noise (+ RFI)``, with
``g[t, a, c, p] = bandpass[a, c, p] * gain[t, a, p]``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import h5py
import numpy as np
from astropy import units as u
from astropy.coordinates import HADec, SkyCoord
from astropy.time import Time

from contimg.sky.calibrators import calibrator_by_name, vla_calibrators
from contimg.config import SimulateConfig
from contimg.sky.geometry import angular_separation_rad, hadec_basis, hadec_to_icrs
from contimg.io.naming import subband_name
from contimg.sky.catalogue import write_catalogue
from contimg.sim.corrupt import inject_rfi, random_gains, thermal_sigma_jy
from contimg.sim.sky import offset_position, random_sources_around, random_sources_in_strip
from contimg.sky.skymodel import PointSources, sky_visibilities
from contimg.sim.uvh5 import SubbandHeader, write_subband_file
from contimg.sky.telescope import (ARRAY_HEIGHT_M, ARRAY_LAT_RAD, ARRAY_LON_RAD, active_station_numbers,
                               array_location, stations)

log = logging.getLogger(__name__)

__all__ = ["simulate", "SimulatedGroup", "band_frequencies", "TOP_CHANNEL_HZ", "SUBBAND_WIDTH_HZ"]

TOP_CHANNEL_HZ = 1498643188.4765625  # centre of sb00's first channel (real files)
REAL_CHAN_WIDTH_HZ = 244140.625
SUBBAND_WIDTH_HZ = 48 * REAL_CHAN_WIDTH_HZ
SIDEREAL_DAY_D = 0.99726956634


@dataclass(frozen=True)
class SimulatedGroup:
    group_id: str
    files: list[Path]
    time_jd: np.ndarray
    has_calibrator: bool


def band_frequencies(*, n_subbands: int, chans_per_subband: int) -> tuple[np.ndarray, float]:
    """Channel centres (n_subbands * chans_per_subband,) **descending** as in the files (sb00
    first, highest), and the (negative) channel width; fewer channels per subband are wider so
    the band stays 1311.25-1498.75 MHz."""
    width = SUBBAND_WIDTH_HZ / chans_per_subband
    top_edge = TOP_CHANNEL_HZ + REAL_CHAN_WIDTH_HZ / 2
    k = np.arange(n_subbands * chans_per_subband)
    return top_edge - (k + 0.5) * width, -width


def _transit_jd(ra_rad: float, dec_rad: float, after_jd: float) -> float:
    """First time after ``after_jd`` at which the ICRS position crosses the meridian."""
    t = after_jd
    for _ in range(3):
        frame = HADec(obstime=Time(t, format="jd"), location=array_location(), pressure=0 * u.hPa)
        ha = SkyCoord(ra=ra_rad * u.rad, dec=dec_rad * u.rad).transform_to(frame).ha.wrap_at(180 * u.deg)
        t -= ha.to_value(u.hourangle) / 24.0 * SIDEREAL_DAY_D
    if t < after_jd:
        t += SIDEREAL_DAY_D
    return t


def _apparent_dec(ra_rad: float, dec_rad: float, jd: float) -> float:
    frame = HADec(obstime=Time(jd, format="jd"), location=array_location(), pressure=0 * u.hPa)
    return float(SkyCoord(ra=ra_rad * u.rad, dec=dec_rad * u.rad).transform_to(frame).dec.rad)


def simulate(out_dir: str | Path, *, n_groups: int, cfg: SimulateConfig) -> list[SimulatedGroup]:
    """Write ``n_groups`` groups of 16 subband files and ``truth.h5`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    st = stations()
    ants = active_station_numbers(cfg.n_antennas)
    i1, i2 = np.triu_indices(ants.size)
    ant1, ant2 = ants[i1], ants[i2]
    cross = ant1 != ant2
    b_enu = st.enu_m[ant2] - st.enu_m[ant1]
    freq_desc, chan_width = band_frequencies(n_subbands=cfg.n_subbands, chans_per_subband=cfg.chans_per_subband)
    nchan_sb = cfg.chans_per_subband
    int_d = cfg.int_time_s / 86400.0
    interval_d = (cfg.group_interval_s or cfg.n_times * cfg.int_time_s) / 86400.0
    start_guess = Time(cfg.start_time_utc, format="isot", scale="utc").jd

    cal = calibrator_by_name(cfg.calibrator) if cfg.calibrator_group is not None else None
    if cal is not None:
        transit = _transit_jd(cal.ra_rad, cal.dec_rad, start_guess)
        t0 = transit - cfg.calibrator_group * interval_d - cfg.n_times * int_d / 2
        dec0 = (np.radians(cfg.pointing_dec_deg) if cfg.pointing_dec_deg is not None
                else _apparent_dec(cal.ra_rad, cal.dec_rad, transit))
    else:
        t0 = start_guess
        dec0 = np.radians(cfg.pointing_dec_deg) if cfg.pointing_dec_deg is not None else ARRAY_LAT_RAD
    uvw = b_enu @ hadec_basis(ha_rad=0.0, dec_rad=dec0).T  # constant in time

    group_times = [t0 + g * interval_d + (np.arange(cfg.n_times) + 0.5) * int_d for g in range(n_groups)]
    parts: list[PointSources] = []
    group_of: list[np.ndarray] = []
    avoid = []
    # the real bright sky: every listed calibrator within 5 deg of a group's field (the chosen one
    # among them), as the subtraction stage expects to find it
    centres = [hadec_to_icrs(ha_rad=0.0, dec_rad=dec0, time_jd=float(t.mean())) for t in group_times]
    listed = [c for c in vla_calibrators() if c.flux_jy >= cfg.bright_min_flux_jy or (cal and c.name == cal.name)]
    listed = [c for c in listed if any(angular_separation_rad(c.ra_rad, c.dec_rad, ra, de) < np.radians(5.0) for ra, de in centres)]
    if listed:
        parts.append(PointSources.from_calibrators(listed))
        group_of.append(np.full(len(listed), -1))
        avoid += [(c.ra_rad, c.dec_rad) for c in listed]
    light_curve = np.asarray(cfg.variable_flux_jy, float)
    if light_curve.size and light_curve.size != n_groups:
        raise ValueError(f"simulate.variable_flux_jy has {light_curve.size} fluxes for {n_groups} groups")
    events: list[tuple[str, int, float, float, np.ndarray]] = []  # name, truth group, ra, dec, flux per group
    if light_curve.size:
        mid = group_times[n_groups // 2]
        ra_v, dec_v = hadec_to_icrs(ha_rad=0.0, dec_rad=dec0 + np.radians(cfg.variable_offset_deg),
                                    time_jd=float(mid.mean()))
        events.append(("var000", -2, ra_v % (2 * np.pi), dec_v, light_curve))
    if cfg.transient_flux_jy > 0:
        if not 0 <= cfg.transient_group < n_groups:
            raise ValueError(f"simulate.transient_group {cfg.transient_group}: there are {n_groups} groups")
        ra_t, dec_t = offset_position(ra_rad=centres[cfg.transient_group][0], dec_rad=centres[cfg.transient_group][1],
                                      east_deg=cfg.transient_offset_deg[0], north_deg=cfg.transient_offset_deg[1])
        on = np.zeros(n_groups)
        on[cfg.transient_group] = cfg.transient_flux_jy
        events.append(("tra000", -3, ra_t, dec_t, on))
    if cfg.sky_mode == "strip":
        avoid += [(e[2], e[3]) for e in events]
        if n_groups:
            parts.append(random_sources_in_strip(
                rng=rng, per_deg2=cfg.strip_sources_per_deg2, ra_first_rad=centres[0][0], ra_last_rad=centres[-1][0],
                dec_rad=float(np.mean([c[1] for c in centres])), halfwidth_deg=cfg.strip_halfwidth_deg, margin_deg=cfg.strip_margin_deg,
                flux_range_jy=cfg.faint_flux_jy, min_separation_deg=cfg.faint_min_separation_deg, avoid=avoid,
                ref_freq_hz=1.4e9, prefix="str"))
            group_of.append(np.full(len(parts[-1]), 0))
    else:
        for g, times in enumerate(group_times):
            ra_c, dec_c = hadec_to_icrs(ha_rad=0.0, dec_rad=dec0, time_jd=float(times.mean()))
            faint = random_sources_around(
                rng=rng, n=cfg.n_faint_sources, ra_rad=ra_c, dec_rad=dec_c, radius_deg=cfg.faint_radius_deg,
                flux_range_jy=cfg.faint_flux_jy, min_separation_deg=cfg.faint_min_separation_deg, avoid=avoid,
                ref_freq_hz=1.4e9, prefix=f"g{g:02d}s")
            avoid += list(zip(faint.ra_rad, faint.dec_rad))
            parts.append(faint)
            group_of.append(np.full(len(faint), g))
    n_fixed = sum(len(p) for p in parts)
    for name, tag, ra_e, dec_e, curve in events:  # flat spectra; the sources entry holds the mean flux
        parts.append(PointSources(np.array([name]), np.array([ra_e]), np.array([dec_e]),
                                  np.array([float(curve.mean())]), np.zeros(1), 1.4e9))
        group_of.append(np.full(1, tag))
    sources = PointSources.concat(parts) if parts else None
    source_group = np.concatenate(group_of) if group_of else np.zeros(0, int)

    gains_rng = np.random.default_rng(cfg.seed + 1)
    all_hours = (np.concatenate(group_times) - t0) * 24.0 if group_times else np.zeros(0)
    gains = random_gains(rng=gains_rng, nant=ants.size, freq_hz=freq_desc, time_hours=all_hours,
                         amp_scatter=cfg.gain_amp_scatter, phase_scatter_deg=cfg.gain_phase_scatter_deg,
                         ripple=cfg.bandpass_ripple, phase_drift_deg_per_hour=cfg.gain_phase_drift_deg_per_hour)
    if cfg.dead_antennas:
        names = [str(n) for n in st.names[ants]]
        unknown = sorted(set(cfg.dead_antennas) - set(names))
        if unknown:
            raise ValueError(f"simulate.dead_antennas: {unknown} are not among the active antennas")
        gains.bandpass[[names.index(n) for n in cfg.dead_antennas]] = 0.0
    sigma = thermal_sigma_jy(sefd_jy=cfg.sefd_jy, chan_width_hz=chan_width, int_time_s=cfg.int_time_s)
    delays = np.zeros((st.numbers.size, 2), int)
    delays[ants] = rng.integers(11000, 16500, (ants.size, 1))
    header_common = dict(
        int_time_s=cfg.int_time_s, chan_width_hz=chan_width, ant1=ant1, ant2=ant2, uvw_m=uvw,
        antenna_names=st.names, antenna_numbers=st.numbers,
        antenna_positions_m=st.ecef_m - array_location().itrs.cartesian.xyz.to_value(u.m),
        lat_deg=np.degrees(ARRAY_LAT_RAD), lon_deg=np.degrees(ARRAY_LON_RAD), alt_m=ARRAY_HEIGHT_M,
        pointing_dec_rad=dec0, applied_delays_ns=" ".join(str(d) for d in delays.ravel()),
    )
    ant_index = {a: k for k, a in enumerate(ants)}
    k1 = np.array([ant_index[a] for a in ant1])
    k2 = np.array([ant_index[a] for a in ant2])

    results = []
    with h5py.File(out / "truth.h5", "w") as truth:
        truth.attrs.update(pointing_dec_rad=dec0, sigma_jy=sigma, calibrator=cal.name if cal else "",
                           config=cfg.model_dump_json(), sky_mode=cfg.sky_mode)
        src = truth.create_group("sources")
        if sources is not None:
            for key in ("ra_rad", "dec_rad", "flux_jy", "spectral_index"):
                src[key] = getattr(sources, key)
            src["name"] = np.array([n.encode() for n in sources.name])
            src["group"] = source_group
            src.attrs["ref_freq_hz"] = sources.ref_freq_hz
            write_catalogue(out / "catalogue.csv", sources)
        for name, _, _, _, curve in events:
            key = "variable" if name.startswith("var") else "transient"
            truth[f"{key}/flux_jy"] = curve
            truth[key].attrs["name"] = name
        truth["antenna_numbers"] = ants
        truth["ant1"], truth["ant2"] = ant1, ant2
        truth["freq_hz"] = freq_desc[::-1]
        truth["bandpass"] = gains.bandpass[:, ::-1, :]
        for g, times in enumerate(group_times):
            start = Time(times[0] - int_d / 2, format="jd").to_datetime()
            start = start.replace(microsecond=0)
            lst = Time(times, format="jd").sidereal_time("apparent", longitude=np.degrees(ARRAY_LON_RAD) * u.deg).rad
            sky_g = sources
            if events:  # the variable and the transient (last) have this group's flux
                sky_g = replace(sources, flux_jy=np.concatenate([sources.flux_jy[:n_fixed],
                                                                 [e[4][g] for e in events]]))
            sky = (sky_visibilities(sources=sky_g, time_jd=times, freq_hz=freq_desc, b_enu_m=b_enu,
                                    pointing_dec_rad=dec0) if sources is not None
                   else np.zeros((times.size, ant1.size, freq_desc.size), np.complex64))
            tsel = slice(g * cfg.n_times, (g + 1) * cfg.n_times)
            g_full = gains.bandpass[None] * gains.gain[tsel][:, :, None, :]  # (t, a, c, p)
            vis = np.empty(sky.shape + (2,), np.complex64)
            for p in range(2):
                gp = g_full[..., p].astype(np.complex64)
                vis[..., p] = gp[:, k1] * np.conj(gp[:, k2]) * sky
                vis[..., p] += (sigma * (rng.standard_normal(sky.shape, np.float32)
                                         + 1j * rng.standard_normal(sky.shape, np.float32))).astype(np.complex64)
            autos = ~cross
            vis[:, autos] = (np.abs(g_full[:, k1[autos]]) ** 2 * cfg.sefd_jy).astype(np.complex64)
            rfi = inject_rfi(rng=rng, vis=vis, cross=cross, sigma_jy=sigma) if cfg.rfi else None
            header = SubbandHeader(time_jd=times, lst_rad=lst, freq_hz=freq_desc, **header_common)
            files = []
            jitter = rng.uniform(0, cfg.clock_jitter_s, cfg.n_subbands)
            jitter[0] = 0.0
            for sb in range(cfg.n_subbands):
                stamp = start + timedelta(seconds=float(jitter[sb]))
                path = out / subband_name(stamp.replace(microsecond=0), sb)
                chans = slice(sb * nchan_sb, (sb + 1) * nchan_sb)
                sb_header = SubbandHeader(**{**header.__dict__, "freq_hz": freq_desc[chans]})
                write_subband_file(path, header=sb_header, vis=np.ascontiguousarray(vis[:, :, chans, :]))
                files.append(path)
            gid = start.strftime("%Y-%m-%dT%H:%M:%S")
            tg = truth.create_group(f"groups/{gid}")
            tg["time_jd"] = times
            tg["gain"] = gains.gain[tsel]
            if rfi is not None:
                tg.create_dataset("rfi_mask", data=rfi.mask[:, :, ::-1], compression="gzip", compression_opts=1)
                tg.create_dataset("rfi_amp_sigma", data=rfi.amp_sigma[:, :, ::-1], compression="gzip",
                                  compression_opts=1)
                tg.attrs["rfi_events"] = json.dumps(rfi.events)
            has_cal = cal is not None and g == cfg.calibrator_group
            tg.attrs["has_calibrator"] = has_cal
            tg.attrs["files"] = json.dumps([f.name for f in files])
            results.append(SimulatedGroup(gid, files, times, has_cal))
            log.info("simulated group %s (%d files)%s", gid, len(files), " with calibrator" if has_cal else "")
    return results

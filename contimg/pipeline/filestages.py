"""The stages of a file group — one UVH5, UVFITS or Measurement Set of any array, queued by
`contimg run FILE` (`contimg.state.ingest.IngestDB.register_observation`) — under the same names,
with the same intermediates, calibration registry rows and products rows as a DSA-110 group's
(`contimg.pipeline.stages`). The service runs both kinds, `status` and the web list both, and
`export-cal` exports either. The science is `contimg.pipeline.generic`'s.

- ``read``: `read_observation`; a bad ``generic.continuum_channels`` fails here, before the long work.
- ``flag``: every scan (`flag_observation`); ``flags.zarr`` keeps the flags.
- ``calibrate``: `solve_observation`, then `apply_calibration`. The bandpass is saved as
  ``<root>/cal/<id>.zarr`` and the calibrator scans' gains as ``<root>/cal/gains/<id>.zarr``, both
  left in ``work.cal_registrations`` for the registry (``active`` or ``rejected`` by
  `solution_quality` / `time_gain_quality`: a VLA table never matches a DSA-110 group's channels,
  so the registry never applies it there). ``cal.zarr`` keeps what was applied: the bandpass,
  the per-scan solutions and the gains at every integration (what `export-cal` writes).
- ``image``: each field with data (`image_field`), one ``image.zarr/<field>.zarr`` each; a field that
  cannot be imaged is named in the summary and the others go on; none at all fails the group.
- ``write``: FITS per field and ``image.products`` kind, ``summary.json``, the products rows.

A group resumed from a checkpoint re-reads the file and replays the stored flags and solutions,
as a DSA-110 group does. Progress: one INFO line per stage (this module's and
`contimg.pipeline.generic`'s loggers), each with its seconds and the run's elapsed seconds.
QA gates are the DSA-110 groups' (their thresholds are that array's); a file group has none.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from contimg.calibrate import GainSolution, TimeGains
from contimg.calibrate.registry import registration_row, validity_hours
from contimg.calibrate.storage import save_solution, save_time_gains
from contimg.config import Config
from contimg.imaging.storage import load_imageset, save_imageset
from contimg.io.fits import imageset_header, write_fits
from contimg.io.store import read_zarr, write_zarr
from contimg.pipeline.generic import (CalResult, GenericInputError, apply_calibration, chan_text, continuum_channels,
                                      flag_observation, image_field, integration_gains, read_observation,
                                      solve_observation, took)
from contimg.pipeline.work import GroupWork
from contimg.qa.gates import solution_quality, time_gain_quality

log = logging.getLogger(__name__)

__all__ = ["FILE_STAGES"]

MJD_JD = 2400000.5


def _run_t0(work: GroupWork) -> float:
    """The run's start (perf_counter seconds) for the elapsed time in progress lines."""
    return work.meta.setdefault("run_t0", time.perf_counter())


def _read(work: GroupWork, cfg: Config) -> None:
    path = Path(work.group.files[0])
    store = work.out_dir / "image.zarr"
    if work.done("image"):
        work.meta = json.loads((store / "meta.json").read_text())
        work.meta["run_t0"] = time.perf_counter()
        return
    work.meta = {}
    t0 = run_t0 = _run_t0(work)
    log.info("%s: reading", path)
    obs = read_observation(path, max_scan_gap_s=cfg.generic.max_scan_gap_s)
    chan = continuum_channels(obs, cfg.generic.continuum_channels)  # a bad range fails before the long work
    nchan = obs.freq_hz.size
    imaged = chan_text(obs.file_channels(np.arange(nchan) if chan is None else chan))
    log.info("%s: read %s data: %d rows, %d channels, %d fields (%s), %d scans; imaging channels %s (%s)",
             obs.path.name, obs.telescope, obs.time_jd.size, nchan, len(obs.fields),
             ", ".join(f.label if f.label == f.name else f"{f.label} = {f.name}" for f in obs.fields.values()),
             np.unique(obs.scans).size, imaged, took(t0, run_t0))
    work.observation = obs
    t_mjd = obs.time_jd - MJD_JD
    work.meta.update(
        input=str(path), telescope=obs.telescope, files={"0": str(path)}, problems=[], n_subbands=None,
        start_mjd=float(t_mjd.min()), end_mjd=float(t_mjd.max()), mid_mjd=float(np.mean(t_mjd)),
        rows=int(obs.time_jd.size), channels=int(nchan), freq_min_hz=float(obs.freq_hz.min()),
        freq_max_hz=float(obs.freq_hz.max()), dish_diameter_m=obs.dish_diameter_m,
        continuum_channels=imaged if chan is not None else "all", imaged_channels=imaged,
        scans=int(np.unique(obs.scans).size),
        history=(f"contimg: Stokes I from channels {imaged} of 0~{nchan - 1} (the file's numbering)"
                 + ("" if chan is None else ", generic.continuum_channels")),
        fields={f.label: {"name": f.name, "calibrator": f.calibrator, "ra_deg": float(np.degrees(f.ra_rad)),
                          "dec_deg": float(np.degrees(f.dec_rad))}
                for k, f in obs.fields.items() if (obs.field_id == k).any()})


def _flag(work: GroupWork, cfg: Config) -> None:
    if work.done("image"):
        return
    obs, path = work.observation, work.out_dir / "flags.zarr"
    if work.done("flag"):
        arrays, attrs = read_zarr(path)
        if arrays["flags"].shape != obs.flags.shape:
            raise ValueError(f"{path}: stored flags {arrays['flags'].shape} do not fit {obs.path} {obs.flags.shape}")
        obs.flags[...] = arrays["flags"]
        work.flag_fraction = float(attrs["fraction"])
        work.meta["flagged_fraction_per_scan"] = attrs["per_scan"]
        return
    per_scan = flag_observation(obs, cfg, run_t0=_run_t0(work))
    work.flag_fraction = float(obs.flags.mean())
    work.meta["flagged_fraction_per_scan"] = {str(k): v for k, v in per_scan.items()}
    work.out_dir.mkdir(parents=True, exist_ok=True)
    work.keep_intermediate("flag", lambda: write_zarr(
        path, arrays={"flags": obs.flags}, attrs={"fraction": work.flag_fraction, "group_id": work.group_id,
                                                  "per_scan": work.meta["flagged_fraction_per_scan"],
                                                  "input": str(obs.path)}))


def _calibrate(work: GroupWork, cfg: Config) -> None:
    if work.done("image"):
        return
    obs, path = work.observation, work.out_dir / "cal.zarr"
    if work.done("calibrate"):
        arrays, attrs = read_zarr(path)
        if attrs["applied"]:
            cal = _stored_cal(arrays, attrs)
            apply_calibration(obs, cal)
            work.file_cal, work.cal_applied, work.calibrator = cal, True, attrs["calibrator"]
        work.cal_registrations = list(attrs.get("registrations", []))  # registered again if a crash lost them
        work.meta["calibration"] = attrs.get("summary")
        return
    if not cfg.calibrate.enabled:
        log.info("%s: calibration off (calibrate.enabled = false): imaging the data as they are", obs.path.name)
        work.meta["calibration"] = None
        work.keep_intermediate("calibrate", lambda: write_zarr(path, arrays={}, attrs={
            "applied": False, "solved_on": "", "calibrator": "", "refant": "", "solutions": [], "subtracted": [],
            "registrations": [], "summary": None}))
        return
    t0 = time.perf_counter()
    cal = solve_observation(obs, cfg)
    apply_calibration(obs, cal)
    log.info("%s: calibrated: bandpass on %s, flux scale from %s, %d scan solutions, refant %s (%s)",
             obs.path.name, cal.bandpass_field, cal.flux_standard or "the calibrator list", len(cal.solutions),
             cal.refant, took(t0, _run_t0(work)))
    work.file_cal, work.cal_applied = cal, True
    work.calibrator = obs.fields[cal.bandpass_field_id].calibrator
    work.cal_registrations = _register(work, cal, cfg)
    summary = {"refant": cal.refant, "refant_reason": cal.refant_reason, "flux_standard": cal.flux_standard,
               "bandpass_field": cal.bandpass_field, "channels": cal.channels, "transferred_fluxes": cal.fluxes,
               "scan_solutions": len(cal.solutions), "problems": cal.problems,
               "registered": [{"set_name": r["set_name"], "cal_type": r["cal_type"], "status": r["status"],
                               "path": r["path"]} for r in work.cal_registrations]}
    work.meta["calibration"] = summary
    t_int, g_int, f_int = integration_gains(obs, cal)
    bp, sols = cal.bandpass, cal.solutions
    work.keep_intermediate("calibrate", lambda: write_zarr(path, arrays={
        "antenna_numbers": bp["antenna_numbers"], "gains": bp["gains"], "flags": bp["flags"], "snr": bp["snr"],
        "sol_scan": np.array([x["scan"] for x in sols], np.int64),
        "sol_field": np.array([x["field"] for x in sols], np.int64),
        "sol_time_jd": np.array([x["time_jd"] for x in sols], np.float64),
        "sol_gains": np.array([x["gains"] for x in sols]), "sol_flags": np.array([x["flags"] for x in sols]),
        "sol_snr": np.array([x["snr"] for x in sols]),
        "time_jd": t_int, "time_gains": g_int, "time_gain_flags": f_int},
        attrs={"applied": True, "solved_on": work.group_id, "calibrator": work.calibrator, "refant": cal.refant,
               "solution_mid_jd": cal.mid_jd, "solutions": [{"set_name": work.group_id, "weight": 1.0}],
               "time_gain_calmode": "ap", "subtracted": [], "registrations": work.cal_registrations,
               "summary": summary,
               "cal_result": {"refant_reason": cal.refant_reason, "flux_standard": cal.flux_standard,
                              "bandpass_field": cal.bandpass_field, "fluxes": cal.fluxes, "problems": cal.problems,
                              "channels": cal.channels, "standard_field": cal.standard_field,
                              "bandpass_field_id": cal.bandpass_field_id, "mid_jd": cal.mid_jd,
                              "iterations": int(bp.get("iterations", 0))}}))


def _stored_cal(arrays: dict, attrs: dict) -> CalResult:
    """The `CalResult` that ``cal.zarr`` keeps (enough to apply it again)."""
    c = attrs["cal_result"]
    bandpass = {"antenna_numbers": arrays["antenna_numbers"], "gains": arrays["gains"], "flags": arrays["flags"],
                "snr": arrays["snr"], "refant": attrs["refant"], "iterations": c["iterations"]}
    sols = [{"scan": int(s), "field": int(f), "time_jd": float(t), "gains": g, "flags": fl, "snr": sn}
            for s, f, t, g, fl, sn in zip(arrays["sol_scan"], arrays["sol_field"], arrays["sol_time_jd"],
                                          arrays["sol_gains"], arrays["sol_flags"], arrays["sol_snr"])]
    return CalResult(attrs["refant"], c["refant_reason"], c["flux_standard"], c["bandpass_field"], bandpass, sols,
                     c["fluxes"], c["problems"], c["channels"], c["standard_field"], c["bandpass_field_id"],
                     c["mid_jd"])


def _register(work: GroupWork, cal: CalResult, cfg: Config) -> list[dict]:
    """Save the bandpass and the calibrator scans' gains under ``<root>/cal`` and return their
    registry rows (the shell registers them)."""
    obs, cc, bp = work.observation, cfg.calibrate, cal.bandpass
    meta = {"telescope": obs.telescope, "input": str(obs.path), "telescope_info": obs.telescope_info}
    calibrator = obs.fields[cal.bandpass_field_id].calibrator
    sol = GainSolution(bp["antenna_numbers"], obs.freq_hz, bp["gains"], bp["flags"], bp["snr"], cal.refant,
                       cal.mid_jd, calibrator, work.group_id, int(bp.get("iterations", 0)), meta)
    work.cal_dir.mkdir(parents=True, exist_ok=True)
    path = save_solution(work.cal_dir / f"{work.group_id}.zarr", sol)
    metrics, reasons = solution_quality(gains=sol.gains, flags=sol.flags, snr=sol.snr, freq_hz=sol.freq_hz,
                                        cfg=cfg.qa)
    validity = dict(bandpass_hours=cc.bandpass_validity_hours, gain_hours=cc.gain_validity_hours)
    params = {"refant": cal.refant, "refant_reason": cal.refant_reason, "file": str(obs.path),
              "telescope": obs.telescope, "flux_standard": cal.flux_standard}
    rows = [registration_row(sol=sol, path=path, cal_type="bandpass",
                             validity_h=validity_hours(cal_type="bandpass", **validity), passed=not reasons,
                             params=params, quality={"passed": not reasons, "metrics": metrics, "reasons": reasons})]
    if not cal.solutions:
        return rows
    sols = sorted(cal.solutions, key=lambda x: x["time_jd"])
    names = sorted({obs.fields[x["field"]].calibrator for x in sols})
    tg = TimeGains(bp["antenna_numbers"], np.array([x["time_jd"] for x in sols]),
                   np.array([x["gains"] for x in sols], np.complex64), np.array([x["flags"] for x in sols]),
                   np.array([x["snr"] for x in sols], np.float32), cal.refant, "+".join(names), work.group_id,
                   "ap", 0.0, 0, {**meta, "scans": [int(x["scan"]) for x in sols]})
    tpath = save_time_gains(work.cal_dir / "gains" / f"{work.group_id}.zarr", tg)
    tmetrics, treasons = time_gain_quality(gains=tg.gains, flags=tg.flags, snr=tg.snr, cfg=cfg.qa)
    rows.append(registration_row(sol=tg, path=tpath, cal_type="gains",
                                 validity_h=validity_hours(cal_type="gains", **validity), passed=not treasons,
                                 params={**params, "calmode": "ap", "per": "calibrator scan"},
                                 quality={"passed": not treasons, "metrics": tmetrics, "reasons": treasons}))
    return rows


def _image(work: GroupWork, cfg: Config) -> None:
    store = work.out_dir / "image.zarr"
    if work.done("image"):
        for label in work.meta["imaged"]:
            work.field_images[label], _ = load_imageset(store / f"{label}.zarr")
        work.field_errors = dict(work.meta["field_errors"])
        work.cal_applied, work.calibrator = bool(work.meta["cal_applied"]), work.meta["calibrator"]
        work.imgs = work.field_images[work.meta["primary"]]
        return
    obs, run_t0 = work.observation, _run_t0(work)
    chan = continuum_channels(obs, cfg.generic.continuum_channels)
    seconds = {}
    for k, f in obs.fields.items():
        if f.label not in work.meta["fields"]:
            continue
        t0 = time.perf_counter()
        try:
            imgs = image_field(obs, k, cfg, nthreads=cfg.runtime.nthreads, channels=chan, run_t0=run_t0)
        except GenericInputError as exc:  # this field is lost, the others are still imaged
            log.error("%s", exc)
            work.field_errors[f.label] = str(exc)
            continue
        seconds[f.label] = round(time.perf_counter() - t0, 3)
        log.info("%s: imaged %s: %d CLEAN iterations in %d major cycles, peak %.4g Jy/beam, noise %.3g Jy/beam (%s)",
                 obs.path.name, f.label, imgs.clean_iterations, imgs.stats["major_cycles"], imgs.peak_jy,
                 imgs.noise_jy, took(t0, run_t0))
        work.field_images[f.label] = imgs
    if not work.field_images:
        raise GenericInputError(f"{obs.path}: no field could be imaged: "
                                + "; ".join(f"{k}: {v}" for k, v in work.field_errors.items()))
    targets = [label for label in work.field_images if not work.meta["fields"][label]["calibrator"]]
    primary = (targets or list(work.field_images))[0]
    work.imgs = work.field_images[primary]
    work.observation = None  # the visibilities are no longer needed: free the memory now
    work.meta.update(imaged=list(work.field_images), field_errors=work.field_errors, primary=primary,
                     image_seconds=seconds, cal_applied=work.cal_applied, calibrator=work.calibrator,
                     flagged_fraction=work.flag_fraction)
    work.keep_intermediate("image", lambda: _store_images(work, store))


def _store_images(work: GroupWork, store: Path) -> None:
    """Every field's images and the group's metadata into ``image.zarr`` (built beside it, then
    renamed into place)."""
    tmp = store.with_name(store.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for label, imgs in work.field_images.items():
        save_imageset(tmp / f"{label}.zarr", imgs)
    (tmp / "meta.json").write_text(json.dumps({k: v for k, v in work.meta.items() if k != "run_t0"}, default=float))
    shutil.rmtree(store, ignore_errors=True)
    os.replace(tmp, store)


def _write(work: GroupWork, cfg: Config) -> None:
    """FITS per field and kind, ``summary.json``; the products rows in ``work.image_rows``."""
    meta, gid = work.meta, work.group_id
    work.products, work.image_rows = [], []
    fields = {}
    for label, f in meta["fields"].items():
        if label in work.field_errors:
            fields[label] = {"name": f["name"], "calibrator": f["calibrator"], "error": work.field_errors[label]}
            continue
        imgs = work.field_images[label]
        files = {}
        for kind in cfg.image.products:
            image = imgs.images[kind]
            header = imageset_header(imgs, kind, extra={
                "OBJECT": label, "FIELDNAM": f["name"], "TELESCOP": meta["telescope"], "INSTRUME": meta["telescope"],
                "PBCUTOFF": cfg.image.pb_cutoff if kind == "pbcor" else 0.0})
            header.comments["FIELDNAM"] = "the field's name in the visibility file"
            header.add_history(meta["history"])
            path = str(write_fits(work.out_dir / f"{gid}.{label}.{kind}.fits", image=image, header=header))
            files[kind] = path
            work.products.append(path)
            work.image_rows.append(dict(
                path=path, group_id=gid, type=kind, field=label,
                bmaj_arcsec=float(np.degrees(imgs.beam_rad[0]) * 3600),
                bmin_arcsec=float(np.degrees(imgs.beam_rad[1]) * 3600), bpa_deg=float(np.degrees(imgs.beam_rad[2])),
                noise_jy=imgs.noise_jy, peak_jy=float(np.nanmax(image)) if image.size else 0.0,
                dynamic_range=imgs.dynamic_range, pbcor=int(kind == "pbcor")))
        n = imgs.images["restored"].shape[0]
        fields[label] = {"name": f["name"], "calibrator": f["calibrator"], "ra_deg": f["ra_deg"],
                         "dec_deg": f["dec_deg"], "npix": n, "cell_arcsec": float(np.degrees(imgs.cell_rad) * 3600),
                         "beam_arcsec": [float(np.degrees(imgs.beam_rad[0]) * 3600),
                                         float(np.degrees(imgs.beam_rad[1]) * 3600)],
                         "beam_pa_deg": float(np.degrees(imgs.beam_rad[2])), "freq_hz": imgs.freq_hz,
                         "bandwidth_hz": imgs.bandwidth_hz, "noise_jy": imgs.noise_jy, "peak_jy": imgs.peak_jy,
                         "centre_jy": float(imgs.images["restored"][n // 2, n // 2]),
                         "clean_iterations": imgs.clean_iterations, "channels_used": imgs.stats["channels_used"],
                         "files": files}
    timings = {**{k: round(v, 3) for k, v in work.timings_s.items()},
               **{f"image {k}": v for k, v in meta.get("image_seconds", {}).items()}}
    summary = {"input": meta["input"], "group_id": gid, "telescope": meta["telescope"], "rows": meta["rows"],
               "channels": meta["channels"], "freq_min_hz": meta["freq_min_hz"], "freq_max_hz": meta["freq_max_hz"],
               "dish_diameter_m": meta["dish_diameter_m"], "continuum_channels": meta["continuum_channels"],
               "scans": meta["scans"], "flagged_fraction_per_scan": meta.get("flagged_fraction_per_scan", {}),
               "flagged_fraction": meta.get("flagged_fraction", work.flag_fraction),
               "calibration": meta.get("calibration"), "fields": fields, "timings_s": timings}
    tmp = work.out_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=float) + "\n")
    os.replace(tmp, work.out_dir / "summary.json")
    work.summary = summary
    log.info("%s: products in %s (%s)", Path(meta["input"]).name, work.out_dir, took(None, meta.get("run_t0")))


FILE_STAGES = {"read": _read, "flag": _flag, "calibrate": _calibrate, "image": _image, "write": _write}

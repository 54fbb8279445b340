"""One group end to end on the CPU (read -> flag -> calibrate -> image -> write), and the batch
run over a folder (`contimg run`). A group's failure is recorded with its stage and reason and
never stops the others."""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from contimg.calibrate import GainSolution, apply_gains, calibrator_model, smooth_over_channels, solve_gains
from contimg.calibrators import find_transiting_calibrator
from contimg.config import Config
from contimg.flag import flag_basic, flag_stats
from contimg.imaging.fitsio import image_header, write_fits
from contimg.imaging.imager import ImageSet, make_images
from contimg.io.naming import Group, group_files, scan_folder
from contimg.io.reader import ReadError, read_group, read_subband_meta
from contimg.products import ProductsDB
from contimg.store import find_solution, save_solution, write_zarr
from contimg.subtract import bright_sources_in_beam, fit_and_subtract

log = logging.getLogger(__name__)

__all__ = ["GroupResult", "process_group", "run_batch", "group_has_calibrator"]


@dataclass
class GroupResult:
    group_id: str
    status: str  # "completed" | "failed"
    stage: str  # the last stage reached
    error: str = ""
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # flagged subbands and their reasons
    calibrator: str = ""
    cal_applied: bool = False
    products: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    image_stats: dict = field(default_factory=dict)


def group_has_calibrator(group: Group, cfg: Config) -> bool:
    """Whether a listed calibrator transits during ``group`` (from the first readable header)."""
    for sb in sorted(group.files):
        try:
            meta = read_subband_meta(group.files[sb])
        except ReadError:
            continue
        return find_transiting_calibrator(
            time_jd=meta.time_jd, pointing_dec_rad=meta.pointing_dec_rad,
            min_flux_jy=cfg.calibrate.min_calibrator_flux_jy,
            max_offset_deg=cfg.calibrate.max_calibrator_offset_deg) is not None
    return False


def _write_images(imgs: ImageSet, *, out_dir: Path, group_id: str, cfg: Config, db: ProductsDB) -> list[str]:
    written = []
    for kind in cfg.image.products:
        image = imgs.images[kind]
        npix = image.shape[0]
        bunit = {"model": "Jy/pixel"}.get(kind, "Jy/beam")
        header = image_header(npix=npix, cell_rad=imgs.cell_rad, ra_rad=imgs.ra_rad, dec_rad=imgs.dec_rad,
                              freq_hz=imgs.freq_hz, bandwidth_hz=imgs.bandwidth_hz, time_start_jd=imgs.time_start_jd,
                              time_mid_jd=imgs.time_mid_jd, bunit=bunit,
                              beam_rad=imgs.beam_rad if kind in ("restored", "pbcor", "residual") else None,
                              extra={"OBJECT": group_id, "NITER": imgs.clean_iterations,
                                     "PBCUTOFF": cfg.image.pb_cutoff if kind == "pbcor" else 0.0})
        path = write_fits(out_dir / f"{group_id}.{kind}.fits", image=image, header=header)
        written.append(str(path))
        db.upsert_image(path=str(path), group_id=group_id, type=kind,
                        bmaj_arcsec=float(np.degrees(imgs.beam_rad[0]) * 3600),
                        bmin_arcsec=float(np.degrees(imgs.beam_rad[1]) * 3600),
                        bpa_deg=float(np.degrees(imgs.beam_rad[2])), noise_jy=imgs.noise_jy,
                        peak_jy=float(np.nanmax(image)) if image.size else 0.0,
                        dynamic_range=imgs.dynamic_range, pbcor=int(kind == "pbcor"))
    return written


def process_group(group: Group, *, cfg: Config, root: Path, db: ProductsDB) -> GroupResult:
    """Run one group through every stage; never raises for bad data (the result says why)."""
    root = Path(root)
    out_dir = root / "products" / group.group_id
    cal_dir = root / "cal"
    out_dir.mkdir(parents=True, exist_ok=True)
    cal_dir.mkdir(parents=True, exist_ok=True)
    res = GroupResult(group.group_id, "in_progress", "read", files=[str(p) for p in group.files.values()])
    db.upsert_group(group_id=group.group_id, status="in_progress", stage="read", error="")
    tick = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        res.timings_s[res.stage] = round(now - tick, 3)
        tick = now
        res.stage = stage
        db.upsert_group(group_id=group.group_id, stage=stage)

    try:
        chunk = read_group(group, n_subbands=cfg.grouping.n_subbands, on_bad_subband=cfg.grouping.on_bad_subband,
                           min_subbands=cfg.grouping.min_subbands, read_threads=cfg.runtime.read_threads)
        res.problems = list(chunk.problems)
        lap("flag")
        flags, n_mad = flag_basic(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                                  flag_autocorrelations=cfg.flag.flag_autocorrelations,
                                  mad_threshold_sigma=cfg.flag.mad_threshold_sigma,
                                  extend_fraction=cfg.flag.extend_fraction)
        chunk.flags = flags
        stats = flag_stats(flags=flags, ant1=chunk.ant1, ant2=chunk.ant2, n_antennas=chunk.antenna_enu_m.shape[0],
                           new_by_mad=n_mad)
        write_zarr(out_dir / "flags.zarr", arrays={"flags": flags, "per_antenna": stats.per_antenna,
                                                   "per_channel": stats.per_channel, "per_time": stats.per_time},
                   attrs={"fraction": stats.fraction, "new_by_mad": n_mad, "group_id": group.group_id})
        lap("calibrate")
        sol = None
        mid = float(np.mean(chunk.time_jd))
        if cfg.calibrate.enabled:
            cal = find_transiting_calibrator(time_jd=chunk.time_jd, pointing_dec_rad=chunk.pointing_dec_rad,
                                             min_flux_jy=cfg.calibrate.min_calibrator_flux_jy,
                                             max_offset_deg=cfg.calibrate.max_calibrator_offset_deg)
            if cal is not None:
                others = [c for c in bright_sources_in_beam(
                    time_jd=chunk.time_jd, pointing_dec_rad=chunk.pointing_dec_rad,
                    min_flux_jy=cfg.calibrate.subtract_min_flux_jy, radius_deg=cfg.calibrate.subtract_radius_deg)
                    if c.name != cal.name]
                model = calibrator_model(chunk=chunk, calibrators=[cal, *others])
                nums, gains, gflags, snr, refant, iters = solve_gains(
                    vis=chunk.vis, model=model, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                    antenna_names=chunk.antenna_names,
                    refants=[cfg.calibrate.refant, *cfg.calibrate.refant_fallbacks],
                    max_iter=cfg.calibrate.max_iter, tolerance=cfg.calibrate.tolerance, min_snr=cfg.calibrate.min_snr,
                    baseline_m=np.linalg.norm(chunk.antenna_enu_m[chunk.ant2] - chunk.antenna_enu_m[chunk.ant1], axis=1),
                    min_baseline_m=cfg.calibrate.min_baseline_m)
                gains = smooth_over_channels(gains=gains, flags=gflags, window=cfg.calibrate.smooth_channels)
                sol = GainSolution(nums, chunk.freq_hz, gains, gflags, snr, refant, mid, cal.name, group.group_id,
                                   iters, {"flux_jy": cal.flux_jy, "median_snr": float(np.median(snr))})
                save_solution(cal_dir / f"{group.group_id}.zarr", sol)
                log.info("group %s: solved gains on %s (refant %s, %d iterations, median SNR %.0f)",
                         group.group_id, cal.name, refant, iters, np.median(snr))
            else:
                sol = find_solution(cal_dir, mid_jd=mid, freq_hz=chunk.freq_hz,
                                    validity_hours=cfg.calibrate.validity_hours)
        if sol is not None:
            apply_gains(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                        antenna_numbers=sol.antenna_numbers, gains=sol.gains, gain_flags=sol.flags)
            write_zarr(out_dir / "cal.zarr", arrays={"antenna_numbers": sol.antenna_numbers, "gains": sol.gains,
                                                     "flags": sol.flags, "snr": sol.snr},
                       attrs={"solved_on": sol.group_id, "calibrator": sol.calibrator, "refant": sol.refant})
            res.cal_applied, res.calibrator = True, sol.calibrator
        else:
            log.warning("group %s: no calibrator and no valid solution: imaging uncalibrated data", group.group_id)
        subtracted = []
        if sol is not None and cfg.calibrate.subtract_bright_sources:
            bright = bright_sources_in_beam(time_jd=chunk.time_jd, pointing_dec_rad=chunk.pointing_dec_rad,
                                            min_flux_jy=cfg.calibrate.subtract_min_flux_jy,
                                            radius_deg=cfg.calibrate.subtract_radius_deg)
            subtracted = fit_and_subtract(chunk=chunk, sources=bright, min_baseline_m=cfg.calibrate.min_baseline_m)
        lap("image")
        imgs = make_images(chunk, cfg=cfg.image, nthreads=cfg.runtime.nthreads, subtracted=subtracted)
        lap("write")
        write_zarr(out_dir / "image.zarr", arrays=imgs.images,
                   attrs={"ra_deg": float(np.degrees(imgs.ra_rad)), "dec_deg": float(np.degrees(imgs.dec_rad)),
                          "cell_arcsec": cfg.image.cell_arcsec, "freq_hz": imgs.freq_hz,
                          "beam_rad": list(imgs.beam_rad), "noise_jy": imgs.noise_jy, "peak_jy": imgs.peak_jy})
        res.products = _write_images(imgs, out_dir=out_dir, group_id=group.group_id, cfg=cfg, db=db)
        res.image_stats = {"noise_jy": imgs.noise_jy, "peak_jy": imgs.peak_jy, "dynamic_range": imgs.dynamic_range,
                           "beam_arcsec": [float(np.degrees(b) * 3600) for b in imgs.beam_rad[:2]],
                           "clean_iterations": imgs.clean_iterations}
        lap("done")
        res.status = "completed"
        db.upsert_group(
            group_id=group.group_id, status="completed", stage="done", error="",
            start_mjd=float(chunk.time_jd[0] - 2400000.5), end_mjd=float(chunk.time_jd[-1] - 2400000.5),
            mid_mjd=mid - 2400000.5, cal_applied=int(res.cal_applied), calibrator=res.calibrator,
            image_name=str(out_dir / f"{group.group_id}.restored.fits"), ra_deg=float(np.degrees(imgs.ra_rad)),
            dec_deg=float(np.degrees(imgs.dec_rad)), n_subbands=int(chunk.subbands_present.sum()),
            problems=json.dumps(res.problems))
    except Exception as exc:  # noqa: BLE001 - a group's failure is recorded, never fatal
        res.status = "failed"
        res.error = f"{type(exc).__name__}: {exc}"
        log.error("group %s failed in stage %s: %s", group.group_id, res.stage, res.error)
        log.debug("%s", traceback.format_exc())
        db.upsert_group(group_id=group.group_id, status="failed", stage=res.stage, error=res.error)
    return res


def run_batch(in_dir: str | Path, *, root: str | Path, cfg: Config) -> tuple[list[GroupResult], int]:
    """Every group in ``in_dir``, calibrator groups first; ``failures.json`` in ``root``.

    Returns the results and the exit code: 0 all completed, 2 some failed, 1 none could run.
    """
    root = Path(root)
    (root / "state").mkdir(parents=True, exist_ok=True)
    files = scan_folder(in_dir)
    groups = group_files(files, tolerance_s=cfg.grouping.group_tolerance_s)
    if not groups:
        log.error("no subband files (YYYY-MM-DDTHH:MM:SS_sbNN.hdf5) in %s", in_dir)
        (root / "failures.json").write_text(json.dumps(
            [{"group_id": None, "stage": "discover", "error": f"no subband files in {in_dir}"}], indent=2))
        return [], 1
    order = sorted(groups, key=lambda g: (not group_has_calibrator(g, cfg), g.group_id))
    db = ProductsDB(root / "state" / "products.sqlite3")
    try:
        results = [process_group(g, cfg=cfg, root=root, db=db) for g in order]
    finally:
        db.close()
    results.sort(key=lambda r: r.group_id)
    failed = [r for r in results if r.status != "completed"]
    (root / "failures.json").write_text(json.dumps(
        [{"group_id": r.group_id, "stage": r.stage, "error": r.error, "files": r.files} for r in failed], indent=2))
    (root / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=2, default=float))
    code = 0 if not failed else (1 if len(failed) == len(results) else 2)
    return results, code

"""The stages of one group — read, flag, calibrate, image, write — as plain synchronous functions
on a `GroupWork`, shared by the service, `contimg run`, `replay` and `reprocess`. A file group
(one visibility file of any array, `contimg run FILE`) has its own stages under the same names
(`contimg.pipeline.filestages`); `run_stage` runs either.

Each stage after ``read`` leaves a Zarr intermediate in ``<root>/products/<group_id>/``
(``flags.zarr``, ``cal.zarr``, ``image.zarr``); ``work.checkpoint`` names the last stage whose
intermediate is stored. A resumed group re-reads the raw subband files (they are the archive)
and replays the stored flags, gains and subtraction scales instead of recomputing them; a group
whose images are stored goes straight to ``write``. These functions touch no database: they
return what the service shell records, so they can run in worker threads.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from contimg.calibrate import GainSolution, TimeGains, apply_gains, time_gains_at
from contimg.sky.calibrators import find_transiting_calibrator
from contimg.config import Config
from contimg.flag import flag_group
from contimg.io.fits import imageset_header, write_fits
from contimg.device.backend import array_module, host_empty, is_device
from contimg.device.transfer import upload_flags
from contimg.imaging.imager import image_stokes_i, stokes_i_for_imaging
from contimg.io.chunk import VisChunk
from contimg.io.naming import Group
from contimg.io.reader import ReadError, read_group, read_subband_meta
from contimg.qa.gates import (calibrate_gate, flag_gate, image_gate, read_gate)
from contimg.qa.plots import bandpass_png, flags_png, gain_phase_png, uv_coverage_png
from contimg.calibrate.storage import load_solution
from contimg.imaging.storage import load_imageset, save_imageset
from contimg.imaging.selfcheck import with_resolved_backends
from contimg.io.store import read_zarr, write_zarr
from contimg.calibrate.subtract import SubtractedSource, bright_sources_in_beam, fit_and_subtract, subtract_fitted
from contimg.pipeline.calibration import solve_or_look_up
from contimg.pipeline.filestages import FILE_STAGES
from contimg.pipeline.work import CHECKPOINT_FILES, DEFERRED_INTERMEDIATES, STAGES, GroupWork

log = logging.getLogger(__name__)

__all__ = ["STAGES", "CHECKPOINT_FILES", "DEFERRED_INTERMEDIATES", "GroupWork", "run_stage", "history_solutions", "usable_checkpoint", "checkpoint_before",
           "reprocess_checkpoint",
           "group_has_calibrator"]

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


def checkpoint_before(stage: str) -> str:
    """The checkpoint from which ``stage`` is re-run ("" for read and flag)."""
    i = STAGES.index(stage)
    return STAGES[i - 1] if i >= 2 else ""


def reprocess_checkpoint(out_dir: Path, from_stage: str) -> str:
    """The checkpoint a group whose intermediates are in ``out_dir`` restarts from to re-run
    ``from_stage``; FileNotFoundError naming the missing intermediate when it is not stored."""
    checkpoint = checkpoint_before(from_stage)
    have = usable_checkpoint(out_dir, checkpoint)
    if have != checkpoint:
        at_most = {"": "read", "flag": "calibrate", "calibrate": "image"}[have]
        raise FileNotFoundError(f"group {Path(out_dir).name}: re-running from {from_stage} needs "
                                f"{Path(out_dir) / CHECKPOINT_FILES[checkpoint]}; the stored intermediates allow "
                                f"--from-stage {at_most} at most")
    return checkpoint


def usable_checkpoint(out_dir: Path, checkpoint: str) -> str:
    """``checkpoint``, or the latest earlier one whose intermediates are all on disk (a crash
    between replacing an intermediate and recording it can leave one missing)."""
    stages = [s for s in ("flag", "calibrate", "image") if checkpoint and STAGES.index(s) <= STAGES.index(checkpoint)]
    usable = ""
    for s in stages:
        if not (Path(out_dir) / CHECKPOINT_FILES[s]).is_dir():
            break
        usable = s
    return usable


def _place(work: GroupWork, backend: str) -> None:
    """Put the group's visibilities where ``backend`` ("cpu", "gpu", "auto", or "twin": the
    device path's array code on numpy) computes: uploaded once at the first device stage and
    kept there for the next ones (`VisChunk.to_device`); brought back only for a CPU stage after
    a device one. Every move is counted in ``work.chunk.transfers``."""
    work.chunk.to_device(array_module(backend))


def _flags_onto(chunk: VisChunk, flags: np.ndarray) -> np.ndarray:
    """The group's stored flags (host, from flags.zarr) where the chunk lives: on the device they
    go up bit-packed."""
    if not chunk.on_device:
        return flags
    return upload_flags(flags, xp=chunk.xp, counter=chunk.transfers, label="flags (flagged)")


def _upload_target(cfg: Config):
    """The array module of the first stage that runs on a device (flag, calibrate, image: the
    group is uploaded there, once), or numpy: the visibilities are read into memory that suits it
    (`host_empty`)."""
    for backend in (cfg.flag.backend, cfg.calibrate.backend, cfg.image.backend):
        if is_device(xp := array_module(backend)):
            return xp
    return np


def _read(work: GroupWork, cfg: Config) -> None:
    if work.done("image"):
        _, attrs = read_zarr(work.out_dir / "image.zarr")
        work.meta = attrs["group_meta"]
        return
    chunk = read_group(work.group, n_subbands=cfg.grouping.n_subbands, on_bad_subband=cfg.grouping.on_bad_subband,
                       min_subbands=cfg.grouping.min_subbands, read_threads=cfg.runtime.read_threads,
                       vis_empty=functools.partial(host_empty, xp=_upload_target(cfg)))
    work.chunk = chunk
    work.meta = {"start_mjd": float(chunk.time_jd[0] - 2400000.5), "end_mjd": float(chunk.time_jd[-1] - 2400000.5),
                 "mid_mjd": float(np.mean(chunk.time_jd) - 2400000.5), "n_subbands": int(chunk.subbands_present.sum()),
                 "problems": list(chunk.problems), "files": {str(k): v for k, v in chunk.files.items()}}
    if cfg.qa.enabled:
        work.gates["read"] = read_gate(subbands_present=chunk.subbands_present, vis=chunk.vis, cross=chunk.cross,
                                       cfg=cfg.qa)


def _flag(work: GroupWork, cfg: Config) -> None:
    chunk = work.chunk
    path = work.out_dir / "flags.zarr"
    if work.done("image"):
        return
    if work.done("flag"):  # replayed where the chunk is (the host after read): the next device stage uploads it
        arrays, attrs = read_zarr(path)
        if arrays["flags"].shape != chunk.flags.shape:
            raise ValueError(f"{path}: stored flags {arrays['flags'].shape} do not fit the data {chunk.flags.shape}")
        chunk.flags = _flags_onto(chunk, arrays["flags"])
        work.flag_fraction = float(attrs["fraction"])
        if cfg.qa.enabled:
            work.gates["flag"] = flag_gate(fraction=work.flag_fraction, per_antenna=arrays["per_antenna"],
                                           reasons=attrs.get("reasons", {}), cfg=cfg.qa)
        return
    _place(work, cfg.flag.backend)  # the group's one upload when flagging runs on the device
    nchan = chunk.vis.shape[2]
    result = flag_group(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                        n_antennas=chunk.antenna_enu_m.shape[0],
                        chans_per_subband=nchan // max(len(chunk.subbands_present), 1), cfg=cfg.flag,
                        transfers=chunk.transfers if chunk.on_device else None)
    flags, stats = result.flags, result.stats  # flags on the host for flags.zarr; the statistics counted where they are
    chunk.flags = result.flags_xp if chunk.on_device else flags  # (on the device: they stay there)
    work.flag_fraction = float(stats.fraction)
    cross = chunk.cross
    per_time_channel = stats.per_time_channel
    work.out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"per_antenna": stats.per_antenna, "per_baseline": stats.per_baseline, "per_channel": stats.per_channel,
              "per_time": stats.per_time, "per_time_channel": per_time_channel}
    attrs = {"fraction": stats.fraction, "reasons": stats.reasons, "detected": stats.detected,
             "backend": result.backend, "group_id": work.group_id}
    # (the service stores flags.zarr at once: the live waterfall reads its summary when the flag stage ends)
    work.keep_intermediate("flag", lambda: write_zarr(path, arrays={"flags": flags, **arrays}, attrs=attrs))
    if cfg.qa.enabled:
        work.gates["flag"] = flag_gate(fraction=stats.fraction, per_antenna=stats.per_antenna,
                                       reasons=stats.reasons, cfg=cfg.qa)
        if cfg.qa.plots:
            qa_dir = work.out_dir / "qa"
            freq_hz = chunk.freq_hz.copy()
            work.add_plot("flags", functools.partial(
                flags_png, qa_dir / f"{work.group_id}.flags.png", per_time_channel=per_time_channel,
                per_antenna=stats.per_antenna, freq_hz=freq_hz, title=f"{work.group_id}: flags"))
            work.add_plot("uv_coverage", functools.partial(
                uv_coverage_png, qa_dir / f"{work.group_id}.uv.png", uvw_m=chunk.uvw_m[:, cross], freq_hz=freq_hz,
                title=f"{work.group_id}: uv coverage"))


def _calibrate(work: GroupWork, cfg: Config) -> None:
    """Solve or look up gains, apply them, subtract the bright sources; ``cal.zarr`` keeps the
    gains applied, which sets they came from (``solutions``, with weights where two were
    interpolated), and the registry row of a solve, so a resumed group replays all of it."""
    chunk = work.chunk
    path = work.out_dir / "cal.zarr"
    if work.done("image"):
        return
    _place(work, cfg.calibrate.backend)
    if work.done("calibrate"):
        arrays, attrs = read_zarr(path)
        if attrs["applied"]:
            work.sol = GainSolution(arrays["antenna_numbers"], chunk.freq_hz, arrays["gains"], arrays["flags"],
                                    arrays["snr"], attrs["refant"],
                                    float(attrs.get("solution_mid_jd", np.mean(chunk.time_jd))), attrs["calibrator"],
                                    attrs["solved_on"], 0, {"solutions": attrs.get("solutions", [])})
        if "time_gains" in arrays:
            work.tgains = TimeGains(arrays["antenna_numbers"], chunk.time_jd, arrays["time_gains"],
                                    arrays["time_gain_flags"], np.zeros(arrays["time_gains"].shape, np.float32),
                                    attrs["refant"], attrs["calibrator"], attrs["solved_on"],
                                    attrs.get("time_gain_calmode", "ap"))
        work.subtracted = [SubtractedSource(**s) for s in attrs["subtracted"]]
        # registered again if a crash lost them (idempotent)
        work.cal_registrations = list(attrs.get("registrations", []))
        work.cal_rejected = list(attrs.get("rejected", []))
    elif cfg.calibrate.enabled:
        work.sol, work.tgains = solve_or_look_up(work, cfg)
    sol, per_time = work.sol, None
    if sol is not None:
        if work.tgains is not None:
            per_time = time_gains_at(work.tgains, chunk.time_jd)
        apply_gains(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                    antenna_numbers=sol.antenna_numbers, gains=sol.gains, gain_flags=sol.flags,
                    time_gains=None if per_time is None else per_time[0],
                    time_gain_flags=None if per_time is None else per_time[1],
                    xp=chunk.xp if chunk.on_device else None)
        work.cal_applied, work.calibrator = True, sol.calibrator
    else:
        log.warning("group %s: no calibrator and no valid solution: imaging uncalibrated data", work.group_id)
    if cfg.qa.enabled:
        _calibrate_qa(work, cfg)
    if work.done("calibrate"):
        subtract_fitted(chunk=chunk, subtracted=work.subtracted)
        return
    if sol is not None and cfg.calibrate.subtract_bright_sources:
        bright = bright_sources_in_beam(time_jd=chunk.time_jd, pointing_dec_rad=chunk.pointing_dec_rad,
                                        min_flux_jy=cfg.calibrate.subtract_min_flux_jy,
                                        radius_deg=cfg.calibrate.subtract_radius_deg)
        work.subtracted = fit_and_subtract(chunk=chunk, sources=bright, min_baseline_m=cfg.calibrate.min_baseline_m)
    arrays = {} if sol is None else {"antenna_numbers": sol.antenna_numbers, "gains": sol.gains, "flags": sol.flags,
                                     "snr": sol.snr}
    if per_time is not None:
        arrays.update(time_jd=chunk.time_jd, time_gains=per_time[0], time_gain_flags=per_time[1])
    solutions = [] if sol is None else sol.meta.get("solutions", [{"set_name": sol.group_id, "weight": 1.0}])
    attrs = {"applied": sol is not None, "solved_on": sol.group_id if sol else "",
             "calibrator": sol.calibrator if sol else "", "refant": sol.refant if sol else "",
             "solution_mid_jd": sol.mid_jd if sol else None, "solutions": solutions,
             "time_gain_calmode": work.tgains.calmode if per_time is not None else "",
             "registrations": list(work.cal_registrations), "rejected": list(work.cal_rejected),
             "subtracted": [asdict(s) for s in work.subtracted]}
    work.keep_intermediate("calibrate", lambda: write_zarr(path, arrays=arrays, attrs=attrs))


def _calibrate_qa(work: GroupWork, cfg: Config) -> None:
    sol, chunk = work.sol, work.chunk
    mid = float(np.mean(chunk.time_jd))
    work.gates["calibrate"] = calibrate_gate(
        gains=None if sol is None else sol.gains, flags=None if sol is None else sol.flags,
        snr=None if sol is None else sol.snr, freq_hz=chunk.freq_hz,
        solution_age_hours=0.0 if sol is None else abs(mid - sol.mid_jd) * 24.0,
        solved_here=sol is not None and sol.group_id == work.group_id, cfg=cfg.qa,
        rejected_reasons=work.cal_rejected)
    if sol is not None and cfg.qa.plots and not work.done("calibrate"):
        work.add_plot("bandpass", functools.partial(
            bandpass_png, work.out_dir / "qa" / f"{work.group_id}.bandpass.png", gains=sol.gains, flags=sol.flags,
            freq_hz=chunk.freq_hz.copy(), antenna_numbers=sol.antenna_numbers,
            title=f"{work.group_id}: gains applied (solved on {sol.group_id}, {sol.calibrator})"))
        if sol.group_id == work.group_id:
            _gain_history_plot(work)


def history_solutions(work: GroupWork, max_solutions: int = 20) -> list:
    """The bandpass solutions (`GainSolution`) of the active registered rows near this group
    (the rows the shell handed the stage; time-gain tables are not bandpasses and are left
    out) and this group's own, by time; at most ``max_solutions``, those of other antenna
    sets left out."""
    return _history_solutions(candidates=work.cal_candidates, sol=work.sol, group_id=work.group_id,
                              max_solutions=max_solutions)


def _history_solutions(*, candidates: list[dict], sol, group_id: str, max_solutions: int) -> list:
    rows = sorted([r for r in candidates if r["set_name"] != group_id and r.get("cal_type", "bandpass") == "bandpass"],
                  key=lambda r: r["mid_mjd"])
    paths = [Path(r["path"]) for r in rows if Path(r["path"]).is_dir()][-(max_solutions - 1):]
    sols = [load_solution(p) for p in paths] + [sol]
    sols.sort(key=lambda s: s.mid_jd)
    return [s for s in sols if s.antenna_numbers.shape == sol.antenna_numbers.shape]


def _gain_history_plot(work: GroupWork, max_solutions: int = 20) -> None:
    """Gain phase against time over `history_solutions` (loaded and drawn where `GroupWork.add_plot`
    draws)."""
    work.add_plot("gain_phase", functools.partial(
        _gain_history_png, work.out_dir / "qa" / f"{work.group_id}.gain_phase.png",
        candidates=list(work.cal_candidates), sol=work.sol, group_id=work.group_id, max_solutions=max_solutions))


def _gain_history_png(path: Path, *, candidates: list[dict], sol, group_id: str, max_solutions: int) -> Path | None:
    sols = _history_solutions(candidates=candidates, sol=sol, group_id=group_id, max_solutions=max_solutions)
    if len(sols) < 1:
        return None
    with np.errstate(all="ignore"), warnings.catch_warnings():  # a dead antenna: NaN, no point
        warnings.simplefilter("ignore", RuntimeWarning)
        phase = np.array([np.degrees(np.angle(np.nanmedian(np.where(s.flags[:, :, 0], np.nan, s.gains[:, :, 0].real), axis=1)
                                                + 1j * np.nanmedian(np.where(s.flags[:, :, 0], np.nan, s.gains[:, :, 0].imag), axis=1)))
                          for s in sols])
    return gain_phase_png(path, time_mjd=np.array([s.mid_jd - 2400000.5 for s in sols]), phase_deg=phase,
                          title=f"gain phase of the last {len(sols)} solutions")


def _image(work: GroupWork, cfg: Config) -> None:
    path = work.out_dir / "image.zarr"
    if work.done("image"):
        work.imgs, attrs = load_imageset(path)
        work.cal_applied, work.calibrator = bool(attrs["cal_applied"]), attrs["calibrator"]
        return
    stokes_i = stokes_i_for_imaging(work.chunk, cfg=cfg.image, consume=True)
    work.chunk = None  # the two polarizations, flags and weights are no longer needed: freed before imaging
    if (hook := work.on_chunk_freed) is not None:
        hook()
    work.imgs = image_stokes_i(stokes_i, cfg=cfg.image, nthreads=cfg.runtime.nthreads, subtracted=work.subtracted)
    work.meta["transfer_bytes"] = stokes_i.transfers.as_dict()  # host<->device traffic of the group
    imgs, extra = work.imgs, {"group_meta": dict(work.meta), "cal_applied": work.cal_applied,
                              "calibrator": work.calibrator}
    work.keep_intermediate("image", lambda: save_imageset(path, imgs, extra=extra))


def _write(work: GroupWork, cfg: Config) -> None:
    """The deferred intermediates (`GroupWork.store_deferred`), then the FITS products, each
    written under a temporary name and renamed into place; the rows for the products database
    are left in ``work.image_rows`` for the shell to record."""
    work.store_deferred()
    imgs = work.imgs
    lacking = [kind for kind in cfg.image.products if kind not in imgs.images]
    if lacking:  # a group resumed from an image.zarr made when image.products named fewer images
        raise ValueError(f"group {work.group_id}: its image.zarr has no {', '.join(lacking)} image (made before "
                         f"image.products named it): reprocess the group from the image stage")
    work.products, work.image_rows = [], []
    for kind in cfg.image.products:
        image = imgs.images[kind]
        header = imageset_header(imgs, kind, extra={"OBJECT": work.group_id,
                                                    "PBCUTOFF": cfg.image.pb_cutoff if kind == "pbcor" else 0.0})
        path = write_fits(work.out_dir / f"{work.group_id}.{kind}.fits", image=image, header=header)
        work.products.append(str(path))
        work.image_rows.append(dict(
            path=str(path), group_id=work.group_id, type=kind,
            bmaj_arcsec=float(np.degrees(imgs.beam_rad[0]) * 3600),
            bmin_arcsec=float(np.degrees(imgs.beam_rad[1]) * 3600), bpa_deg=float(np.degrees(imgs.beam_rad[2])),
            noise_jy=imgs.noise_jy, peak_jy=float(np.nanmax(image)) if image.size else 0.0,
            dynamic_range=imgs.dynamic_range, pbcor=int(kind == "pbcor")))
    if cfg.qa.enabled:
        _image_qa(work, cfg)


def _image_qa(work: GroupWork, cfg: Config) -> None:
    """The image gate: sources found and cross-matched with the catalogue, noise, dynamic range
    and beam; forced photometry when the gate passed; the restored thumbnail as an artifact."""
    from contimg.qa.photometry import forced_photometry
    from contimg.qa.sources import catalogue_in_field, crossmatch, find_sources, image_wcs, rms_map

    imgs, qc = work.imgs, cfg.qa
    restored, residual, pb = imgs.images["restored"], imgs.images["residual"], imgs.images["pb"]
    npix = restored.shape[0]
    beam_pix = np.sqrt(imgs.beam_rad[0] * imgs.beam_rad[1]) / imgs.cell_rad
    rms = rms_map(residual=residual, tile=int(min(max(32, 10 * beam_pix), npix)))
    wcs = image_wcs(npix=npix, cell_rad=imgs.cell_rad, ra_rad=imgs.ra_rad, dec_rad=imgs.dec_rad)
    found = find_sources(restored=restored, rms=rms, pb=pb, wcs=wcs, beam_rad=imgs.beam_rad, cell_rad=imgs.cell_rad,
                         threshold_sigma=qc.source_threshold_sigma, min_pb=qc.min_pb, max_sources=qc.max_sources)
    summary, matches = {"n_found": int(found["x"].size)}, []
    if work.catalogue is not None:
        field = catalogue_in_field(catalogue=work.catalogue, wcs=wcs, pb=pb, min_pb=qc.min_pb, freq_hz=imgs.freq_hz)
        summary, matches = crossmatch(found=found, catalogue=work.catalogue, field=field, rms=rms,
                                      beam_rad=imgs.beam_rad, threshold_sigma=qc.source_threshold_sigma,
                                      match_radius_beam=qc.match_radius_beam, min_match_snr=qc.min_match_snr)
    matched = {m["detection"]: m["source"] for m in matches}
    work.detections = [{"n": k, **{key: float(found[key][k]) for key in found}, "match": matched.get(k, "")}
                       for k in range(found["x"].size)]
    beam_arcsec = (float(np.degrees(imgs.beam_rad[0]) * 3600), float(np.degrees(imgs.beam_rad[1]) * 3600),
                   float(np.degrees(imgs.beam_rad[2])))
    reference = tuple(qc.reference_beam_arcsec) if qc.reference_beam_arcsec else work.reference_beam_arcsec
    gate = image_gate(noise_jy=imgs.noise_jy, peak_jy=imgs.peak_jy, beam_arcsec=beam_arcsec,
                      reference_beam_arcsec=reference, crossmatch=summary, cfg=qc)
    work.gates["image"] = gate
    pc = cfg.photometry
    work.photometry = []
    if pc.enabled and gate.passed and work.catalogue is not None:
        work.photometry = forced_photometry(
            restored=restored, rms=rms, pb=pb, wcs=wcs, beam_rad=imgs.beam_rad, cell_rad=imgs.cell_rad,
            catalogue=work.catalogue, freq_hz=imgs.freq_hz, min_pb=qc.min_pb, min_flux_jy=pc.min_flux_jy,
            systematic_fraction=pc.systematic_fraction)
    if qc.plots:
        from contimg.io.thumbs import render_png

        (work.out_dir / "qa").mkdir(parents=True, exist_ok=True)
        work.artifacts.append(("thumbnail", str(render_png(
            restored, work.out_dir / "qa" / f"{work.group_id}.restored.png", size=512))))


_STAGE_FUNCS = {"read": _read, "flag": _flag, "calibrate": _calibrate, "image": _image, "write": _write}


def run_stage(stage: str, work: GroupWork, cfg: Config) -> None:
    """Run one stage on ``work`` (in place): a DSA-110 group's here, a file group's in
    `contimg.pipeline.filestages`. Raises on bad data; the caller records the failure."""
    cfg = with_resolved_backends(cfg)  # "auto" only where this process's self-check let the device in
    (FILE_STAGES if work.kind == "file" else _STAGE_FUNCS)[stage](work, cfg)

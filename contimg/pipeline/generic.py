"""Any telescope's file as one observation: read (UVH5, UVFITS or Measurement Set, through
pyuvdata), flag, calibrate on the calibrators it observed, image every field at its own
(tracked) phase centre. What `contimg run FILE` does for a single file.

- **Read** (`read_observation`): pyuvdata's arrays as they are (contimg follows pyuvdata's
  visibility convention, so its uvws and data image directly), the two parallel-hand
  polarizations (RR/LL or XX/YY), channels ascending; fields from the phase-centre catalogue
  (an unprojected/drift file is phased to the meridian at mid-time first).
- **Scans** (`contimg.calibrate.fluxscale.split_scans`): a new scan at a field change or a gap longer than
  ``generic.max_scan_gap_s``; each scan is gridded to (time, baseline, channel, pol) with the
  absent samples flagged (`scan_grid`).
- **Flag** each scan with `contimg.flag.flag_group` (the same flagger as the DSA-110 groups).
- **Calibrate** (`calibrate_observation`): fields within 1' of a listed VLA calibrator are
  calibrators; 3C286 is the flux standard (Perley-Butler 2017, `contimg.calibrate.fluxscale`), any other
  calibrator is solved with a 1 Jy model and its flux density transferred from 3C286 as CASA's
  ``fluxscale`` does (without 3C286 the list's flux is the model). The bandpass on the flux
  standard (or the brightest calibrator), amplitude-and-phase gains per calibrator scan over the
  central ``generic.gain_channel_fraction`` of the channels with the bandpass divided out; the
  target fields get the secondary calibrators' gains interpolated linearly in time (amplitude
  and phase), each calibrator scan its own.
- **Image** each field (`image_field`): Stokes I, `contimg.imaging.imager.clean_image`, the Airy
  beam of the file's dish diameter about the phase centre for the primary-beam correction.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contimg.sky.beam import airy_power
from contimg.calibrate import TimeGains, apply_gains, time_gains_at
from contimg.config import Config
from contimg.calibrate.fluxscale import flux_transfer, perley_butler_2017_3c286, solve_bandpass, solve_scan_gain, split_scans
from contimg.sky.geometry import C_M_S
from contimg.io.fits import imageset_header, write_fits
from contimg.imaging.imager import ImageSet, clean_image

log = logging.getLogger(__name__)

__all__ = ["Field", "Observation", "GenericInputError", "read_observation", "scan_grid", "flag_observation",
           "calibrate_observation", "image_field", "run_observation", "is_single_file"]

FLUX_STANDARD = "1331+305"  # 3C286 in the VLA calibrator list
_PARALLEL = ((-1, -2), (-5, -6))  # RR LL, XX YY
_SUFFIXES = {".uvh5": "uvh5", ".h5": "uvh5", ".hdf5": "uvh5", ".uvfits": "uvfits", ".fits": "uvfits",
             ".ms": "ms"}


class GenericInputError(ValueError):
    """A file contimg cannot process as one observation (the message names it and why)."""


@dataclass(frozen=True)
class Field:
    name: str
    ra_rad: float  # ICRS
    dec_rad: float
    calibrator: str = ""  # the VLA calibrator list name within 1', "" = a target
    model_flux_jy: np.ndarray | None = None  # (nchan,) the flux standard's model, None otherwise


@dataclass
class Observation:
    """One file's cross-correlations, rows in the file's order."""

    path: Path
    telescope: str
    vis: np.ndarray  # (nrow, nchan, 2) complex64, pyuvdata's convention
    flags: np.ndarray  # (nrow, nchan, 2) bool
    weights: np.ndarray  # (nrow, nchan, 2) float32 (nsamples)
    uvw_m: np.ndarray  # (nrow, 3) float64 towards the row's phase centre
    time_jd: np.ndarray  # (nrow,)
    ant1: np.ndarray  # (nrow,) antenna numbers
    ant2: np.ndarray
    field_id: np.ndarray  # (nrow,) keys of ``fields``
    fields: dict[int, Field]
    freq_hz: np.ndarray  # (nchan,) ascending
    chan_width_hz: float
    pols: np.ndarray  # (2,) AIPS codes
    antenna_names: np.ndarray  # indexed by antenna number
    dish_diameter_m: float
    int_time_s: float
    scans: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (nrow,) scan number


def is_single_file(path: Path) -> bool:
    """Whether ``path`` is one visibility file (or an MS directory) rather than a folder of
    DSA-110 subband files."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in _SUFFIXES
    return path.is_dir() and (path / "table.dat").is_file()


def _file_type(path: Path) -> str:
    if path.is_dir():
        return "ms"
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise GenericInputError(f"{path}: not a UVH5, UVFITS or Measurement Set (suffix {path.suffix!r})")
    return kind


def _match_calibrator(ra_rad: float, dec_rad: float, radius_arcmin: float = 1.0):
    from contimg.sky.calibrators import vla_calibrators

    best, best_sep = None, np.inf
    for c in vla_calibrators():
        cos_sep = (np.sin(dec_rad) * np.sin(c.dec_rad)
                   + np.cos(dec_rad) * np.cos(c.dec_rad) * np.cos(ra_rad - c.ra_rad))
        sep = np.degrees(np.arccos(np.clip(cos_sep, -1, 1))) * 60
        if sep < best_sep:
            best, best_sep = c, sep
    return best if best_sep <= radius_arcmin else None


def read_observation(path: Path, *, max_scan_gap_s: float = 300.0) -> Observation:
    """The file at ``path`` (UVH5, UVFITS, or an MS directory) as an `Observation`; raises
    `GenericInputError` naming the file and the problem."""
    from pyuvdata import UVData

    path = Path(path)
    if not path.exists():
        raise GenericInputError(f"{path}: no such file")
    kind = _file_type(path)
    try:
        with warnings.catch_warnings():  # e.g. "uvw_array does not match": the file's uvws are used
            warnings.simplefilter("ignore")
            uv = UVData.from_file(str(path), file_type=kind)
    except Exception as exc:  # noqa: BLE001 - any reader failure is this file's problem
        raise GenericInputError(f"{path}: pyuvdata cannot read it as {kind}: {exc}") from exc
    pols = [int(p) for p in uv.polarization_array]
    pair = next((pp for pp in _PARALLEL if all(p in pols for p in pp)), None)
    if pair is None:
        raise GenericInputError(f"{path}: needs two parallel-hand polarizations (RR/LL or XX/YY), has {pols}")
    if uv.Nspws > 1 and uv.flex_spw_id_array is None:
        raise GenericInputError(f"{path}: {uv.Nspws} spectral windows in an old layout")
    cats = uv.phase_center_catalog
    if any(c["cat_type"] != "sidereal" for c in cats.values()):
        mid = float(np.mean(uv.time_array))
        log.info("%s: not phased to a sidereal position: phasing to the meridian at mid-time", path)
        from astropy.time import Time

        uv.phase_to_time(Time(mid, format="jd"))
        cats = uv.phase_center_catalog
    cross = uv.ant_1_array != uv.ant_2_array
    if not cross.any():
        raise GenericInputError(f"{path}: no cross-correlations")
    ip = [pols.index(p) for p in pair]
    freq = np.asarray(uv.freq_array, float).ravel()
    order = np.argsort(freq)
    data = uv.data_array[cross][:, order][:, :, ip].astype(np.complex64)
    flags = uv.flag_array[cross][:, order][:, :, ip]
    weights = uv.nsample_array[cross][:, order][:, :, ip].astype(np.float32)
    tel = uv.telescope
    names = np.array([""] * (int(tel.antenna_numbers.max()) + 1), dtype=object)
    names[tel.antenna_numbers] = tel.antenna_names
    diam = getattr(tel, "antenna_diameters", None)
    if diam is None or not np.all(np.isfinite(diam)):
        raise GenericInputError(f"{path}: the file gives no antenna diameters (needed for the primary beam)")
    fields = {}
    for cid, c in cats.items():
        ra, dec = float(c["cat_lon"]) % (2 * np.pi), float(c["cat_lat"])
        cal = _match_calibrator(ra, dec)
        fields[int(cid)] = Field(str(c["cat_name"]), ra, dec, cal.name if cal else "")
    chan_width = np.abs(np.asarray(uv.channel_width, float).ravel())
    obs = Observation(
        path=path, telescope=str(tel.name), vis=data, flags=flags, weights=weights,
        uvw_m=np.asarray(uv.uvw_array[cross], np.float64), time_jd=np.asarray(uv.time_array[cross], np.float64),
        ant1=uv.ant_1_array[cross], ant2=uv.ant_2_array[cross], field_id=uv.phase_center_id_array[cross],
        fields=fields, freq_hz=freq[order], chan_width_hz=float(np.median(chan_width)), pols=np.array(pair),
        antenna_names=names.astype(str), dish_diameter_m=float(np.median(diam)),
        int_time_s=float(np.median(uv.integration_time)))
    names_per_row = np.array([fields[int(i)].name for i in obs.field_id])
    obs.scans = split_scans(time_s=obs.time_jd * 86400.0, field=names_per_row, max_gap_s=max_scan_gap_s)
    return obs


def scan_grid(obs: Observation, rows: np.ndarray) -> dict:
    """Rows of one scan as (ntime, nbl, nchan, 2) arrays (absent samples flagged), and the
    (time, baseline) index of each row to scatter results back."""
    a1, a2 = obs.ant1[rows], obs.ant2[rows]
    bl, kb = np.unique(np.stack([a1, a2], 1), axis=0, return_inverse=True)
    ut, kt = np.unique(obs.time_jd[rows], return_inverse=True)
    kb = kb.ravel()
    nchan = obs.freq_hz.size
    vis = np.zeros((ut.size, len(bl), nchan, 2), np.complex64)
    flags = np.ones(vis.shape, bool)
    vis[kt, kb] = obs.vis[rows]
    flags[kt, kb] = obs.flags[rows]
    return {"vis": vis, "flags": flags, "ant1": bl[:, 0], "ant2": bl[:, 1], "time_jd": ut, "kt": kt, "kb": kb}


def flag_observation(obs: Observation, cfg: Config) -> dict:
    """Flag every scan with `flag_group` (in place on ``obs.flags``); returns the flagged
    fraction per scan."""
    from contimg.flag import flag_group

    out = {}
    nant = int(max(obs.ant1.max(), obs.ant2.max())) + 1
    for s in np.unique(obs.scans):
        rows = np.flatnonzero(obs.scans == s)
        g = scan_grid(obs, rows)
        res = flag_group(vis=g["vis"], flags=g["flags"], ant1=g["ant1"], ant2=g["ant2"], n_antennas=nant,
                         chans_per_subband=obs.freq_hz.size, cfg=cfg.flag, backend="cpu")
        obs.flags[rows] = res.flags[g["kt"], g["kb"]]
        out[int(s)] = float(obs.flags[rows].mean())
    return out


def _refant(obs: Observation, preferred: list[str]) -> str:
    """The first of ``preferred`` the file has, else the antenna with the most unflagged data."""
    present = set(np.unique(np.concatenate([obs.ant1, obs.ant2])))
    for name in preferred:
        hits = np.flatnonzero(obs.antenna_names == name)
        if hits.size and hits[0] in present:
            return name
    good = (~obs.flags).sum(axis=(1, 2))
    counts = np.bincount(obs.ant1, good, minlength=obs.antenna_names.size)
    counts += np.bincount(obs.ant2, good, minlength=obs.antenna_names.size)
    return str(obs.antenna_names[int(np.argmax(counts))])


@dataclass
class CalResult:
    refant: str
    flux_standard: str  # the field the flux scale comes from ("" = list fluxes)
    bandpass_field: str
    bandpass: dict  # contimg.calibrate.fluxscale.solve_bandpass's
    solutions: list[dict]  # per calibrator scan: scan, field, time_jd, gains (nant, 2), flags, snr
    fluxes: dict[str, dict]  # per secondary calibrator field: transferred flux, error, n
    problems: list[str] = field(default_factory=list)  # what could not be done, and why


def calibrate_observation(obs: Observation, cfg: Config) -> CalResult:
    """Solve and apply (in place on ``obs.vis``/``obs.flags``) as the module docstring says.
    Raises `GenericInputError` when the file observed no listed calibrator."""
    gc = cfg.generic
    cal_fields = {k: f for k, f in obs.fields.items() if f.calibrator}
    if not cal_fields:
        raise GenericInputError(f"{obs.path}: no field is a listed calibrator: nothing to calibrate on "
                                f"(fields {[f.name for f in obs.fields.values()]})")
    from contimg.sky.calibrators import calibrator_by_name

    freq = obs.freq_hz
    standard = next((k for k, f in cal_fields.items() if f.calibrator == FLUX_STANDARD), None)

    def model_of(k: int) -> np.ndarray:
        if standard is not None:
            return perley_butler_2017_3c286(freq_hz=freq) if k == standard else np.ones_like(freq)
        return calibrator_by_name(cal_fields[k].calibrator).flux_at(freq)

    bp_field = standard if standard is not None else max(
        cal_fields, key=lambda k: calibrator_by_name(cal_fields[k].calibrator).flux_jy)
    refant = _refant(obs, [cfg.calibrate.refant, *cfg.calibrate.refant_fallbacks])
    scans = {int(s): np.flatnonzero(obs.scans == s) for s in np.unique(obs.scans)}
    scan_field = {s: int(obs.field_id[r[0]]) for s, r in scans.items()}
    # the bandpass over all of its field's scans
    bp_rows = np.concatenate([r for s, r in scans.items() if scan_field[s] == bp_field])
    g = scan_grid(obs, bp_rows)
    bandpass = solve_bandpass(vis=g["vis"], flags=g["flags"], ant1=g["ant1"], ant2=g["ant2"],
                              model_jy=model_of(bp_field), antenna_names=obs.antenna_names, refant=refant,
                              min_snr=gc.min_snr_bandpass)
    nchan = freq.size
    keep = max(1, int(round(gc.gain_channel_fraction * nchan)))
    lo = (nchan - keep) // 2
    sols = []
    for s, rows in sorted(scans.items()):
        k = scan_field[s]
        if k not in cal_fields:
            continue
        g = scan_grid(obs, rows)
        sol = solve_scan_gain(vis=g["vis"], flags=g["flags"], ant1=g["ant1"], ant2=g["ant2"], model_jy=model_of(k),
                              bandpass=bandpass, chan_lo=lo, chan_hi=lo + keep - 1,
                              antenna_names=obs.antenna_names, refant=refant, min_snr=gc.min_snr_gain)
        if not np.array_equal(sol["antenna_numbers"], bandpass["antenna_numbers"]):
            sol = _on_antennas(sol, bandpass["antenna_numbers"])
        sols.append({"scan": s, "field": k, "time_jd": float(g["time_jd"].mean()), "gains": sol["gains"],
                     "flags": sol["flags"], "snr": sol["snr"]})
    fluxes, problems = {}, []
    if standard is not None:
        ref = [x for x in sols if x["field"] == standard]
        for k in cal_fields:
            if k == standard:
                continue
            tran = [x for x in sols if x["field"] == k]
            try:
                ft = flux_transfer(ref_amp=np.abs([x["gains"] for x in ref]),
                                   ref_flags=np.array([x["flags"] for x in ref]),
                                   tran_amp=np.abs([x["gains"] for x in tran]),
                                   tran_flags=np.array([x["flags"] for x in tran]))
            except ValueError as exc:  # its 1 Jy gains carry an unknown sqrt(S): not used anywhere
                problems.append(f"{obs.path}: {obs.fields[k].name}: no flux transfer ({exc}); its gains are not used")
                sols = [x for x in sols if x["field"] != k]
                continue
            fluxes[obs.fields[k].name] = {"calibrator": cal_fields[k].calibrator, "flux_jy": ft.flux_jy,
                                          "flux_err_jy": ft.flux_err_jy, "n": ft.n,
                                          "freq_hz": float(np.mean(freq[lo:lo + keep]))}
            for x in tran:  # solved with 1 Jy: the gains carry sqrt(S)
                x["gains"] = (x["gains"] / np.sqrt(ft.flux_jy)).astype(np.complex64)
    _apply(obs, bandpass=bandpass, sols=sols, scans=scans, scan_field=scan_field, cal_fields=cal_fields,
           standard=standard)
    return CalResult(refant, obs.fields[standard].name if standard is not None else "", obs.fields[bp_field].name,
                     bandpass, sols, fluxes, problems)


def _on_antennas(sol: dict, numbers: np.ndarray) -> dict:
    """A scan solution moved onto the bandpass's antennas (missing ones flagged)."""
    k = {a: i for i, a in enumerate(sol["antenna_numbers"])}
    gains = np.zeros((numbers.size, 2), np.complex64)
    flags = np.ones((numbers.size, 2), bool)
    snr = np.zeros((numbers.size, 2), np.float32)
    for i, a in enumerate(numbers):
        if a in k:
            gains[i], flags[i], snr[i] = sol["gains"][k[a]], sol["flags"][k[a]], sol["snr"][k[a]]
    return {**sol, "antenna_numbers": numbers, "gains": gains, "flags": flags, "snr": snr}


def _apply(obs: Observation, *, bandpass, sols, scans, scan_field, cal_fields, standard) -> None:
    """Bandpass and gains into ``obs`` per scan: a calibrator scan its own gains; any other the
    secondaries' (else all calibrators') gains interpolated to its integrations."""
    nums = bandpass["antenna_numbers"]
    interp = [x for x in sols if x["field"] != standard] or sols
    interp = sorted(interp, key=lambda x: x["time_jd"])
    tg = TimeGains(nums, np.array([x["time_jd"] for x in interp]), np.array([x["gains"] for x in interp]),
                   np.array([x["flags"] for x in interp]), np.array([x["snr"] for x in interp]), "", "", "")
    own = {x["scan"]: x for x in sols}
    for s, rows in scans.items():
        g = scan_grid(obs, rows)
        if s in own:
            per_t = np.broadcast_to(own[s]["gains"], (g["time_jd"].size, *own[s]["gains"].shape)).copy()
            per_f = np.broadcast_to(own[s]["flags"], per_t.shape).copy()
        else:
            per_t, per_f = time_gains_at(tg, g["time_jd"])
        vis, flags = g["vis"], g["flags"]
        apply_gains(vis=vis, flags=flags, ant1=g["ant1"], ant2=g["ant2"], antenna_numbers=nums,
                    gains=bandpass["gains"], gain_flags=bandpass["flags"], time_gains=per_t, time_gain_flags=per_f)
        obs.vis[rows] = vis[g["kt"], g["kb"]]
        obs.flags[rows] = flags[g["kt"], g["kb"]]


def image_geometry(obs: Observation, rows: np.ndarray, cfg: Config) -> tuple[int, float]:
    """(npix, cell_rad): ``generic.cell_arcsec`` or a quarter of the synthesized beam
    (λ_min / longest baseline); ``generic.npix`` or twice the primary beam's FWHM (1.03 λ/D at
    the lowest frequency) rounded up to a multiple of 64, at most ``image.npix``."""
    gc = cfg.generic
    lam_min = C_M_S / obs.freq_hz.max()
    if gc.cell_arcsec:
        cell = np.radians(gc.cell_arcsec / 3600)
    else:
        bmax = float(np.max(np.hypot(obs.uvw_m[rows, 0], obs.uvw_m[rows, 1])))
        cell = lam_min / max(bmax, 1e-3) / 4
    if gc.npix:
        return int(gc.npix), float(cell)
    fwhm = 1.03 * C_M_S / obs.freq_hz.min() / obs.dish_diameter_m
    npix = int(np.ceil(2 * fwhm / cell / 64) * 64)
    return min(max(npix, 64), cfg.image.npix), float(cell)


def _field_primary_beam(*, npix: int, cell_rad: float, freq_hz: np.ndarray, weight_f: np.ndarray,
                        diameter_m: float, nbins: int = 16) -> np.ndarray:
    """The Airy power beam about the phase centre (the pointing of a tracked field), averaged
    over channels with the imaging weights; (npix, npix) float32 in FITS order."""
    half = npix / 2
    ax = (np.arange(npix) - half) * cell_rad
    r = np.hypot(ax[:, None], ax[None, :])
    edges = np.linspace(0, freq_hz.size, min(nbins, freq_hz.size) + 1).astype(int)
    acc = np.zeros((npix, npix))
    wsum = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        w = float(weight_f[a:b].sum())
        if w <= 0:
            continue
        f = float(np.sum(weight_f[a:b] * freq_hz[a:b]) / w)
        acc += w * airy_power(sin_theta=np.clip(r, 0, 1), freq_hz=f, diameter_m=diameter_m)
        wsum += w
    return (acc / max(wsum, 1e-30)).astype(np.float32)


def image_field(obs: Observation, field_id: int, cfg: Config, *, nthreads: int = 1) -> ImageSet:
    """Stokes I image of one field at its phase centre (`clean_image`), with its primary beam."""
    rows = np.flatnonzero(obs.field_id == field_id)
    f = obs.fields[field_id]
    vis = obs.vis[rows]
    ok = ~obs.flags[rows] & (obs.weights[rows] > 0)
    both = ok.all(axis=2)
    stokes_i = np.where(both, 0.5 * (vis[..., 0] + vis[..., 1]), 0).astype(np.complex64)
    wgt = np.where(both, obs.weights[rows].sum(axis=2), 0).astype(np.float32)
    if not (wgt > 0).any():
        raise GenericInputError(f"{obs.path}: field {f.name} has no unflagged data to image")
    npix, cell = image_geometry(obs, rows, cfg)
    c = clean_image(uvw_m=np.ascontiguousarray(obs.uvw_m[rows]), freq_hz=obs.freq_hz, vis=stokes_i, wgt=wgt,
                    npix=npix, cell_rad=cell, cfg=cfg.image, nthreads=nthreads)
    weight_f = c.weights.sum(axis=0, dtype=np.float64)
    pb = _field_primary_beam(npix=npix, cell_rad=cell, freq_hz=obs.freq_hz, weight_f=weight_f,
                             diameter_m=obs.dish_diameter_m)
    freq = float(np.sum(weight_f * obs.freq_hz) / max(weight_f.sum(), 1e-30))
    pbcor = np.where(pb >= cfg.image.pb_cutoff, c.restored / np.where(pb > 0, pb, 1), np.nan).astype(np.float32)
    noise = 1.4826 * float(np.median(np.abs(c.residual - np.median(c.residual))))
    t = obs.time_jd[rows]
    return ImageSet(
        images={"dirty": c.dirty, "psf": c.psf, "model": c.model, "residual": c.residual, "restored": c.restored,
                "pbcor": pbcor, "pb": pb},
        ra_rad=f.ra_rad, dec_rad=f.dec_rad, cell_rad=cell, freq_hz=freq,
        bandwidth_hz=float(obs.freq_hz[-1] - obs.freq_hz[0] + obs.chan_width_hz),
        time_start_jd=float(t.min() - obs.int_time_s / 86400 / 2), time_mid_jd=float(np.mean(t)),
        beam_rad=c.beam_rad, noise_jy=noise, peak_jy=float(np.nanmax(c.restored)), clean_iterations=c.iterations,
        stats={"clean_threshold_jy": c.threshold_jy, "major_cycles": c.major_cycles,
               "n_vis": int(np.sum(c.weights > 0, dtype=np.int64)), "npix": npix,
               "channels_used": [int(i) for i in np.flatnonzero(weight_f > 0)]})


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "+-._" else "_" for ch in name)


def run_observation(path: Path, *, root: Path, cfg: Config, nthreads: int = 1) -> dict:
    """Read, flag, calibrate and image the file at ``path``; FITS images per field and a
    ``summary.json`` into ``<root>/products/<file name>/``. Returns the summary. A field that
    cannot be imaged gets an ``error`` entry (the others are imaged); a secondary calibrator
    whose flux cannot be transferred is left out with the reason in ``calibration.problems``."""
    t0 = time.perf_counter()
    timings = {}
    obs = read_observation(path, max_scan_gap_s=cfg.generic.max_scan_gap_s)
    timings["read"] = time.perf_counter() - t0
    obs_id = _safe(Path(path).name)
    out_dir = Path(root) / "products" / obs_id
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    flagged = flag_observation(obs, cfg)
    timings["flag"] = time.perf_counter() - t0
    cal = None
    t0 = time.perf_counter()
    if cfg.calibrate.enabled:
        cal = calibrate_observation(obs, cfg)
    timings["calibrate"] = time.perf_counter() - t0
    fields = {}
    for k, f in obs.fields.items():
        if not (obs.field_id == k).any():
            continue
        t0 = time.perf_counter()
        try:
            imgs = image_field(obs, k, cfg, nthreads=nthreads)
        except GenericInputError as exc:  # this field is lost, the others are still imaged
            log.error("%s", exc)
            fields[f.name] = {"calibrator": f.calibrator, "error": str(exc)}
            continue
        timings[f"image {f.name}"] = time.perf_counter() - t0
        files = {}
        for kind in cfg.image.products:
            header = imageset_header(imgs, kind, extra={
                "OBJECT": f.name, "TELESCOP": obs.telescope, "INSTRUME": obs.telescope,
                "PBCUTOFF": cfg.image.pb_cutoff if kind == "pbcor" else 0.0})
            files[kind] = str(write_fits(out_dir / f"{obs_id}.{_safe(f.name)}.{kind}.fits", image=imgs.images[kind],
                                         header=header))
        n = imgs.images["restored"].shape[0]
        fields[f.name] = {"calibrator": f.calibrator, "ra_deg": float(np.degrees(f.ra_rad)),
                          "dec_deg": float(np.degrees(f.dec_rad)), "npix": n,
                          "cell_arcsec": float(np.degrees(imgs.cell_rad) * 3600),
                          "beam_arcsec": [float(np.degrees(imgs.beam_rad[0]) * 3600),
                                          float(np.degrees(imgs.beam_rad[1]) * 3600)],
                          "beam_pa_deg": float(np.degrees(imgs.beam_rad[2])), "freq_hz": imgs.freq_hz,
                          "noise_jy": imgs.noise_jy, "peak_jy": imgs.peak_jy,
                          "centre_jy": float(imgs.images["restored"][n // 2, n // 2]),
                          "clean_iterations": imgs.clean_iterations,
                          "channels_used": imgs.stats["channels_used"], "files": files}
    summary = {"input": str(path), "telescope": obs.telescope, "rows": int(obs.time_jd.size),
               "channels": int(obs.freq_hz.size), "freq_min_hz": float(obs.freq_hz.min()),
               "freq_max_hz": float(obs.freq_hz.max()), "dish_diameter_m": obs.dish_diameter_m,
               "scans": int(np.unique(obs.scans).size), "flagged_fraction_per_scan": flagged,
               "flagged_fraction": float(obs.flags.mean()),
               "calibration": None if cal is None else {
                   "refant": cal.refant, "flux_standard": cal.flux_standard, "bandpass_field": cal.bandpass_field,
                   "transferred_fluxes": cal.fluxes, "scan_solutions": len(cal.solutions),
                   "problems": cal.problems},
               "fields": fields, "timings_s": {k: round(v, 3) for k, v in timings.items()}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return summary

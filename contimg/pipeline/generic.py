"""Any telescope's file as one observation: read (UVH5, UVFITS or Measurement Set, through
pyuvdata), flag, calibrate on the calibrators it observed, image every field at its own
(tracked) phase centre. The science of a file group (`contimg run FILE`), whose stages —
under the DSA-110 groups' names, through the same service, state and products — are
`contimg.pipeline.filestages`.

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
  and phase), each calibrator scan its own. The solves use every channel (the bandpass) and the
  central fraction (the gains) whatever ``generic.continuum_channels`` says: calibrators are
  continuum sources. The reference antenna (`choose_refant`): ``generic.refant``, else
  ``calibrate.refant`` or its fallbacks when the file has them, else the antenna with the most
  unflagged data; the choice and its reason are logged and kept in ``summary.json``.
- **Image** each field (`image_field`): Stokes I over ``generic.continuum_channels`` (the
  line-free channels; all by default), `contimg.imaging.imager.clean_image`, the Airy beam of the
  file's dish diameter about the phase centre for the primary-beam correction.
- **Names** (`clean_field_names`): files and ``summary.json`` keys use a clean name per field
  (AIPS qualifiers dropped: ``1331+30500002_0`` → ``1331+305``, ``N5921_2`` → ``N5921``; never
  two alike); the file's own name stays in ``summary.json`` (``name``) and the FITS ``FIELDNAM``.

Progress goes to the module's logger (INFO, one line per stage: read, each scan's flagging,
calibration, each field's imaging), each with its seconds and the run's elapsed seconds.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy.stats import mad_std

from contimg.sky.beam import airy_power
from contimg.calibrate import TimeGains, apply_gains, time_gains_at
from contimg.config import Config
from contimg.calibrate.fluxscale import flux_transfer, perley_butler_2017_3c286, solve_bandpass, solve_scan_gain, split_scans
from contimg.sky.geometry import C_M_S
from contimg.io.reader import ReadError
from contimg.imaging.imager import ImageSet, clean_image
from contimg.imaging.pbeam import pb_corrected

log = logging.getLogger(__name__)

__all__ = ["Field", "Observation", "CalResult", "GenericInputError", "read_observation", "scan_grid",
           "flag_observation", "calibrate_observation", "solve_observation", "apply_calibration",
           "integration_gains", "choose_refant", "clean_field_names", "continuum_channels", "image_field",
           "image_geometry", "chan_text", "safe_name", "took", "is_single_file", "input_kind"]

FLUX_STANDARD = "1331+305"  # 3C286 in the VLA calibrator list
_PARALLEL = ((-1, -2), (-5, -6))  # RR LL, XX YY
_SUFFIXES = {".uvh5": "uvh5", ".h5": "uvh5", ".hdf5": "uvh5", ".uvfits": "uvfits", ".fits": "uvfits",
             ".ms": "ms"}


class GenericInputError(ReadError, ValueError):
    """A file contimg cannot process as one observation (the message names it and why): bad
    input, so its group fails at once, without retries (as a `ReadError`)."""


@dataclass(frozen=True)
class Field:
    name: str  # as the file gives it (e.g. "1331+30500002_0")
    ra_rad: float  # ICRS
    dec_rad: float
    calibrator: str = ""  # the VLA calibrator list name within 1', "" = a target
    model_flux_jy: np.ndarray | None = None  # (nchan,) the flux standard's model, None otherwise
    clean_name: str = ""  # for files and summary keys (`clean_field_names`), unique in the file

    @property
    def label(self) -> str:
        """The clean name ('' falls back to the file's)."""
        return self.clean_name or self.name


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
    # (nchan,) each channel's number in the file (0-based; the file's order may be descending)
    file_channel: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    # the file's array for exports (`telescope_info`): name, location and antennas, JSON-able
    telescope_info: dict = field(default_factory=dict)

    def file_channels(self, idx: np.ndarray) -> np.ndarray:
        """The file's channel numbers (sorted) of channels ``idx`` of ``freq_hz`` (ascending)."""
        idx = np.asarray(idx, int)
        return np.sort(self.file_channel[idx] if self.file_channel.size else idx)


def is_single_file(path: Path) -> bool:
    """Whether ``path`` is one visibility file (or an MS directory) rather than a folder of
    DSA-110 subband files."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in _SUFFIXES
    return path.is_dir() and (path / "table.dat").is_file()


def input_kind(path: Path) -> str:
    """"uvh5", "uvfits" or "ms" for ``path`` by its suffix (an MS is a directory);
    `GenericInputError` for anything else."""
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


_AIPS_QUALIFIER = re.compile(r"_\d+$")  # "N5921_2", "1331+30500002_0": the qualifier a UVFITS SOURCE carries


def clean_field_names(fields: list[tuple[str, str]]) -> list[str]:
    """A file-safe name for each (name in the file, matched calibrator or "") in order, none alike
    (ignoring case): a trailing AIPS qualifier ``_<digits>`` dropped; a calibrator whose name
    starts with its list name is that name (``1331+30500002_0`` → ``1331+305``, the VLA list's
    1331+305 lying within 1'); characters other than letters, digits and ``+-._`` as ``_``; a name
    already taken gets ``-2``, ``-3``, ... (``N5921``, ``N5921-2``); an empty one ``field<k>``."""
    out, taken = [], set()
    for k, (name, calibrator) in enumerate(fields):
        base = _AIPS_QUALIFIER.sub("", name.strip())
        if calibrator and base.upper().startswith(calibrator.upper()):
            base = calibrator
        base = safe_name(base).strip("._") or f"field{k}"
        clean, n = base, 1
        while clean.casefold() in taken:
            n += 1
            clean = f"{base}-{n}"
        taken.add(clean.casefold())
        out.append(clean)
    return out


def read_observation(path: Path, *, max_scan_gap_s: float = 300.0) -> Observation:
    """The file at ``path`` (UVH5, UVFITS, or an MS directory) as an `Observation`; raises
    `GenericInputError` naming the file and the problem."""
    from pyuvdata import UVData

    path = Path(path)
    if not path.exists():
        raise GenericInputError(f"{path}: no such file")
    kind = input_kind(path)
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
    for cid, c in sorted(cats.items()):
        ra, dec = float(c["cat_lon"]) % (2 * np.pi), float(c["cat_lat"])
        cal = _match_calibrator(ra, dec)
        fields[int(cid)] = Field(str(c["cat_name"]), ra, dec, cal.name if cal else "")
    clean = clean_field_names([(f.name, f.calibrator) for f in fields.values()])
    fields = {k: replace(f, clean_name=c) for (k, f), c in zip(fields.items(), clean)}
    chan_width = np.abs(np.asarray(uv.channel_width, float).ravel())
    obs = Observation(
        path=path, telescope=str(tel.name), vis=data, flags=flags, weights=weights,
        uvw_m=np.asarray(uv.uvw_array[cross], np.float64), time_jd=np.asarray(uv.time_array[cross], np.float64),
        ant1=uv.ant_1_array[cross], ant2=uv.ant_2_array[cross], field_id=uv.phase_center_id_array[cross],
        fields=fields, freq_hz=freq[order], chan_width_hz=float(np.median(chan_width)), pols=np.array(pair),
        antenna_names=names.astype(str), dish_diameter_m=float(np.median(diam)),
        int_time_s=float(np.median(uv.integration_time)), file_channel=order)
    obs.scans = split_scans(time_s=obs.time_jd * 86400.0, field=obs.field_id, max_gap_s=max_scan_gap_s)
    obs.telescope_info = telescope_info(tel, pols=pair)
    return obs


def telescope_info(tel, *, pols) -> dict:
    """A pyuvdata ``Telescope`` as a JSON-able dict, kept with a file's calibration tables so that
    `export-cal` writes that array (`contimg.interop.caltable.telescope_from_info`): name,
    location (ECEF, m), antenna numbers, names, positions (ECEF relative to the location, m),
    diameters (m), and the two polarization codes solved (AIPS)."""
    diam = getattr(tel, "antenna_diameters", None)
    xyz = tel.location.itrs.cartesian.xyz.to_value("m")
    return {"name": str(tel.name), "location_ecef_m": [float(x) for x in xyz],
            "antenna_numbers": [int(a) for a in tel.antenna_numbers],
            "antenna_names": [str(a) for a in tel.antenna_names],
            "antenna_positions_m": np.asarray(tel.antenna_positions, float).tolist(),
            "antenna_diameters_m": None if diam is None else [float(d) for d in diam],
            "pols": [int(p) for p in pols]}


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


def took(t0: float | None, run_t0: float | None = None) -> str:
    """"1.2 s" since ``t0`` (perf_counter seconds), then the run's elapsed seconds since
    ``run_t0``; either may be None."""
    now = time.perf_counter()
    parts = [f"{now - t0:.1f} s"] if t0 is not None else []
    parts += [f"{now - run_t0:.1f} s elapsed"] if run_t0 is not None else []
    return ", ".join(parts)


def flag_observation(obs: Observation, cfg: Config, *, run_t0: float | None = None) -> dict:
    """Flag every scan with `flag_group` (in place on ``obs.flags``); returns the flagged
    fraction per scan. Logs one line per scan (``run_t0``: the run's start, perf_counter
    seconds, for the elapsed time)."""
    from contimg.flag import flag_group

    out = {}
    nant = int(max(obs.ant1.max(), obs.ant2.max())) + 1
    scans = np.unique(obs.scans)
    for i, s in enumerate(scans):
        t0 = time.perf_counter()
        rows = np.flatnonzero(obs.scans == s)
        g = scan_grid(obs, rows)
        res = flag_group(vis=g["vis"], flags=g["flags"], ant1=g["ant1"], ant2=g["ant2"], n_antennas=nant,
                         chans_per_subband=obs.freq_hz.size, cfg=cfg.flag, backend="cpu")
        obs.flags[rows] = res.flags[g["kt"], g["kb"]]
        out[int(s)] = float(obs.flags[rows].mean())
        log.info("%s: flagged scan %d (%d/%d, %s, %d integrations): %.1f%% flagged (%s)", obs.path.name, s, i + 1,
                 scans.size, obs.fields[int(obs.field_id[rows[0]])].label, g["time_jd"].size, 100 * out[int(s)],
                 took(t0, run_t0))
    return out


def choose_refant(obs: Observation, cfg: Config) -> tuple[str, str]:
    """(reference antenna name, why it was chosen). ``generic.refant`` when set (refused with
    `GenericInputError` when the file has no unflagged data on it); else ``calibrate.refant``,
    then ``calibrate.refant_fallbacks``, the first the file has unflagged data on; else the
    antenna with the most unflagged visibility samples (cross-correlations, both polarizations)."""
    good = (~obs.flags).sum(axis=(1, 2))
    counts = np.bincount(obs.ant1, good, minlength=obs.antenna_names.size)
    counts += np.bincount(obs.ant2, good, minlength=obs.antenna_names.size)
    present = set(np.unique(np.concatenate([obs.ant1, obs.ant2])).tolist())

    def state(name: str) -> str:
        """"ok", "flagged" (in the file, no unflagged data) or "absent"."""
        hits = [int(a) for a in np.flatnonzero(obs.antenna_names == name) if a in present]
        return "absent" if not hits else "ok" if counts[hits].sum() > 0 else "flagged"

    gc, cc = cfg.generic, cfg.calibrate
    if gc.refant is not None:
        st = state(gc.refant)
        if st != "ok":
            have = sorted(str(obs.antenna_names[a]) for a in present)
            raise GenericInputError(f"{obs.path}: generic.refant {gc.refant!r} is "
                                    f"{'not an antenna of the file' if st == 'absent' else 'flagged throughout'} "
                                    f"(antennas: {', '.join(have)})")
        return gc.refant, f"generic.refant {gc.refant!r}"
    missing: dict[str, list[str]] = {"absent": [], "flagged": []}

    def tried() -> str:
        said = {"absent": "not in the file", "flagged": "flagged throughout"}
        return "; ".join(f"{', '.join(repr(n) for n in names)} {said[st]}" for st, names in missing.items() if names)

    for i, name in enumerate([cc.refant, *cc.refant_fallbacks]):
        st = state(name)
        if st == "ok":
            key = "calibrate.refant" if i == 0 else "calibrate.refant_fallbacks"
            return name, f"{key} {name!r}" + (f" (before it: {tried()})" if i else "")
        missing[st].append(name)
    best = int(np.argmax(counts))
    why = (f"the antenna with the most unflagged data ({int(counts[best])} samples): generic.refant is not set, "
           f"calibrate.refant and its fallbacks {tried()}")
    return str(obs.antenna_names[best]), why


@dataclass
class CalResult:
    """What `solve_observation` found; `apply_calibration` applies it (and does so again from a
    stored copy when a group resumes: `contimg.pipeline.filestages`)."""

    refant: str
    refant_reason: str  # why this one (`choose_refant`)
    flux_standard: str  # the field the flux scale comes from ("" = list fluxes)
    bandpass_field: str
    bandpass: dict  # contimg.calibrate.fluxscale.solve_bandpass's
    solutions: list[dict]  # per calibrator scan: scan, field, time_jd, gains (nant, 2), flags, snr
    fluxes: dict[str, dict]  # per secondary calibrator field: transferred flux, error, n
    problems: list[str] = field(default_factory=list)  # what could not be done, and why
    channels: dict[str, str] = field(default_factory=dict)  # the file's channels each solve used ("6~56")
    standard_field: int | None = None  # the flux standard's field id (None: list fluxes)
    bandpass_field_id: int = -1
    mid_jd: float = float("nan")  # the bandpass field's mean time


def calibrate_observation(obs: Observation, cfg: Config) -> CalResult:
    """Solve (`solve_observation`) and apply (`apply_calibration`, in place on ``obs.vis`` and
    ``obs.flags``)."""
    cal = solve_observation(obs, cfg)
    apply_calibration(obs, cal)
    return cal


def solve_observation(obs: Observation, cfg: Config) -> CalResult:
    """The bandpass and per-scan gains as the module docstring says (``obs`` unchanged).
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
    refant, refant_reason = choose_refant(obs, cfg)
    log.info("%s: reference antenna %s: %s", obs.path.name, refant, refant_reason)
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
                problems.append(f"{obs.path}: {obs.fields[k].label}: no flux transfer ({exc}); its gains are not used")
                sols = [x for x in sols if x["field"] != k]
                continue
            fluxes[obs.fields[k].label] = {"calibrator": cal_fields[k].calibrator, "flux_jy": ft.flux_jy,
                                           "flux_err_jy": ft.flux_err_jy, "n": ft.n,
                                           "freq_hz": float(np.mean(freq[lo:lo + keep]))}
            for x in tran:  # solved with 1 Jy: the gains carry sqrt(S)
                x["gains"] = (x["gains"] / np.sqrt(ft.flux_jy)).astype(np.complex64)
    return CalResult(refant, refant_reason, obs.fields[standard].label if standard is not None else "",
                     obs.fields[bp_field].label, bandpass, sols, fluxes, problems,
                     channels={"bandpass": chan_text(obs.file_channels(np.arange(nchan))),
                               "gains": chan_text(obs.file_channels(np.arange(lo, lo + keep)))},
                     standard_field=standard, bandpass_field_id=int(bp_field),
                     mid_jd=float(np.mean(obs.time_jd[bp_rows])))


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


def _scan_gains(cal: CalResult, *, scan: int, time_jd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gains, flags), each (ntime, nant, 2), for the integrations ``time_jd`` of ``scan``: a
    calibrator scan its own gains; any other the secondaries' (else all calibrators') gains
    interpolated to its integrations."""
    own = {x["scan"]: x for x in cal.solutions}
    if scan in own:
        per_t = np.broadcast_to(own[scan]["gains"], (time_jd.size, *own[scan]["gains"].shape)).copy()
        return per_t, np.broadcast_to(own[scan]["flags"], per_t.shape).copy()
    interp = [x for x in cal.solutions if x["field"] != cal.standard_field] or cal.solutions
    interp = sorted(interp, key=lambda x: x["time_jd"])
    tg = TimeGains(cal.bandpass["antenna_numbers"], np.array([x["time_jd"] for x in interp]),
                   np.array([x["gains"] for x in interp]), np.array([x["flags"] for x in interp]),
                   np.array([x["snr"] for x in interp]), "", "", "")
    return time_gains_at(tg, time_jd)


def apply_calibration(obs: Observation, cal: CalResult) -> None:
    """The bandpass and each scan's gains (`_scan_gains`) into ``obs.vis`` and ``obs.flags``."""
    nums = cal.bandpass["antenna_numbers"]
    for s in np.unique(obs.scans):
        rows = np.flatnonzero(obs.scans == s)
        g = scan_grid(obs, rows)
        per_t, per_f = _scan_gains(cal, scan=int(s), time_jd=g["time_jd"])
        vis, flags = g["vis"], g["flags"]
        apply_gains(vis=vis, flags=flags, ant1=g["ant1"], ant2=g["ant2"], antenna_numbers=nums,
                    gains=cal.bandpass["gains"], gain_flags=cal.bandpass["flags"], time_gains=per_t,
                    time_gain_flags=per_f)
        obs.vis[rows] = vis[g["kt"], g["kb"]]
        obs.flags[rows] = flags[g["kt"], g["kb"]]


def integration_gains(obs: Observation, cal: CalResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gains applied after the bandpass at each of the file's integrations, as
    `apply_calibration` applies them: (time_jd (nt,) ascending, gains (nt, nant, 2) complex64,
    flags (nt, nant, 2) bool), antennas as ``cal.bandpass["antenna_numbers"]``."""
    times, gains, flags = [], [], []
    for s in np.unique(obs.scans):
        t = np.unique(obs.time_jd[obs.scans == s])
        g, f = _scan_gains(cal, scan=int(s), time_jd=t)
        times.append(t), gains.append(g), flags.append(f)
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    return t[order], np.concatenate(gains)[order].astype(np.complex64), np.concatenate(flags)[order]


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


def chan_text(numbers) -> str:
    """Sorted channel numbers as CASA writes a selection: ``[0, 1, 2, 5]`` → ``"0~2;5"``."""
    numbers = [int(n) for n in numbers]
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ";".join(f"{a}~{b}" if b > a else f"{a}" for a, b in runs)


def continuum_channels(obs: Observation, ranges: list[tuple[int, int]] | None) -> np.ndarray | None:
    """Indices into ``obs.freq_hz`` (ascending) of the channels ``ranges`` selects
    (``generic.continuum_channels``: [first, last] pairs, inclusive, the file's channel
    numbers); None for None (all channels). A channel the file lacks is refused with
    `GenericInputError` naming the key."""
    if ranges is None:
        return None
    nchan = obs.freq_hz.size
    wanted = set()
    for a, b in ranges:
        if b >= nchan:
            raise GenericInputError(f"{obs.path}: generic.continuum_channels [{a}, {b}]: the file has channels "
                                    f"0 to {nchan - 1}")
        wanted.update(range(int(a), int(b) + 1))
    numbers = obs.file_channel if obs.file_channel.size else np.arange(nchan)
    return np.flatnonzero(np.isin(numbers, sorted(wanted)))


def image_field(obs: Observation, field_id: int, cfg: Config, *, nthreads: int = 1,
                channels: np.ndarray | None = None, run_t0: float | None = None) -> ImageSet:
    """Stokes I image of one field at its phase centre (`clean_image`), with its primary beam.
    ``channels``: indices into ``obs.freq_hz`` to image (`continuum_channels`); None = all.
    Frequency (Hz) is the imaging-weighted mean of those channels, the bandwidth (Hz) their
    number times the channel width; ``stats["channels_used"]``: the file's numbers of those
    with unflagged data. Logs the image's size before CLEAN (``run_t0`` as in `flag_observation`)."""
    rows = np.flatnonzero(obs.field_id == field_id)
    f = obs.fields[field_id]
    chan = np.arange(obs.freq_hz.size) if channels is None else np.asarray(channels, int)
    sel = np.s_[rows] if channels is None else np.ix_(rows, chan)
    freq_hz = obs.freq_hz[chan]
    vis = obs.vis[sel]
    weights = obs.weights[sel]
    ok = ~obs.flags[sel] & (weights > 0)
    both = ok.all(axis=2)
    stokes_i = np.where(both, 0.5 * (vis[..., 0] + vis[..., 1]), 0).astype(np.complex64)
    wgt = np.where(both, weights.sum(axis=2), 0).astype(np.float32)
    if not (wgt > 0).any():
        raise GenericInputError(f"{obs.path}: field {f.label} has no unflagged data to image"
                                + ("" if channels is None else f" in channels {chan_text(obs.file_channels(chan))}"))
    npix, cell = image_geometry(obs, rows, cfg)
    log.info("%s: imaging %s: %d x %d pixels of %.3g\", channels %s (%d), %d rows, CLEAN to at most %d "
             "iterations (%s)", obs.path.name, f.label, npix, npix, np.degrees(cell) * 3600,
             chan_text(obs.file_channels(chan)), chan.size, rows.size, cfg.image.niter, took(None, run_t0))
    c = clean_image(uvw_m=np.ascontiguousarray(obs.uvw_m[rows]), freq_hz=freq_hz, vis=stokes_i, wgt=wgt,
                    npix=npix, cell_rad=cell, cfg=cfg.image, nthreads=nthreads)
    weight_f = c.weights.sum(axis=0, dtype=np.float64)
    pb = _field_primary_beam(npix=npix, cell_rad=cell, freq_hz=freq_hz, weight_f=weight_f,
                             diameter_m=obs.dish_diameter_m)
    freq = float(np.sum(weight_f * freq_hz) / max(weight_f.sum(), 1e-30))
    pbcor = pb_corrected(image=c.restored, pb=pb, cutoff=cfg.image.pb_cutoff)
    noise = float(mad_std(c.residual))
    t = obs.time_jd[rows]
    bandwidth = (float(freq_hz[-1] - freq_hz[0] + obs.chan_width_hz) if channels is None
                 else chan.size * obs.chan_width_hz)
    return ImageSet(
        images={"dirty": c.dirty, "psf": c.psf, "model": c.model, "residual": c.residual, "restored": c.restored,
                "pbcor": pbcor, "pb": pb},
        ra_rad=f.ra_rad, dec_rad=f.dec_rad, cell_rad=cell, freq_hz=freq, bandwidth_hz=bandwidth,
        time_start_jd=float(t.min() - obs.int_time_s / 86400 / 2), time_mid_jd=float(np.mean(t)),
        beam_rad=c.beam_rad, noise_jy=noise, peak_jy=float(np.nanmax(c.restored)), clean_iterations=c.iterations,
        stats={"clean_threshold_jy": c.threshold_jy, "major_cycles": c.major_cycles,
               "n_vis": int(np.sum(c.weights > 0, dtype=np.int64)), "npix": npix,
               "channels_used": [int(i) for i in obs.file_channels(chan[weight_f > 0])]})


def safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "+-._" else "_" for ch in name)

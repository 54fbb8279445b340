"""Read one group of DSA-110 subband files with h5py into a `VisChunk`.

Each file is validated against the group's first readable file (antennas, times, polarizations,
channel count and width, and a frequency that fits its subband number); a missing, unreadable
or mismatched subband is either flagged (its channels flagged, its data left zero, its reason
recorded) or fails the group, as configured. Nothing is invented for a missing subband.
The reasons are kept one per subband in the chunk's ``problems``; the log line and the
`ReadError` message are one line per group, naming each bad file and counting the missing
subbands.
Subband files are read in parallel threads straight into the group's arrays, reversed to
ascending frequency (sb00 is the highest subband).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import h5py
import numba
import numpy as np
from pyuvdata.utils import ENU_from_ECEF, XYZ_from_LatLonAlt
from pyuvdata.uvdata.uvh5 import FastUVH5Meta

from contimg.io.chunk import VisChunk
from contimg.io.naming import Group

log = logging.getLogger(__name__)

__all__ = ["ReadError", "read_group", "read_subband_meta", "SubbandMeta"]


class ReadError(RuntimeError):
    """A group cannot be read; the message names the file(s) and the problem."""


@dataclass(frozen=True)
class SubbandMeta:
    path: Path
    nblts: int
    ntime: int
    nbl: int
    nchan: int
    npol: int
    time_jd: np.ndarray  # (ntime,)
    ant1: np.ndarray  # (nbl,)
    ant2: np.ndarray
    freq_hz: np.ndarray  # (nchan,) as stored (descending)
    chan_width_hz: float
    pols: np.ndarray
    int_time_s: float
    antenna_names: np.ndarray
    antenna_numbers: np.ndarray
    antenna_positions_m: np.ndarray  # ECEF relative to the telescope location
    location: tuple[float, float, float]  # the telescope's latitude, longitude (rad) and altitude (m)
    pointing_dec_rad: float


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_subband_meta(path: str | Path) -> SubbandMeta:
    """Header facts of one subband file; raises `ReadError` naming the file."""
    path = Path(path)
    meta = None
    try:  # pyuvdata's reader of UVH5 headers (as fast as our own h5py one: docs/benchmarks/header.md)
        meta = FastUVH5Meta(path)
        nblts, nfreq, npol = int(meta.Nblts), int(meta.Nfreqs), int(meta.Npols)
        times = np.asarray(meta.time_array)
        a1, a2 = np.asarray(meta.ant_1_array), np.asarray(meta.ant_2_array)
        freq = np.ravel(meta.freq_array).astype(np.float64)
        cw = np.ravel(meta.channel_width)
        dec0 = float(meta.extra_keywords["phase_center_dec"])
        names = np.array([_text(n) for n in meta.antenna_names])
        meta_int = np.ravel(meta.integration_time)
        shape = meta.datagrp["visdata"].shape
        positions = np.asarray(meta.antenna_positions)
        numbers = np.asarray(meta.antenna_numbers)
        pols = np.asarray(meta.polarization_array)
        lat, lon, alt = meta.telescope_location_lat_lon_alt
        location = (float(lat), float(lon), float(alt))
    except (OSError, KeyError, ValueError, AttributeError) as exc:
        raise ReadError(f"{path}: cannot read the header ({type(exc).__name__}: {exc})") from exc
    finally:
        if meta is not None:
            meta.close()
    ntime = np.unique(times).size
    if nblts % ntime:
        raise ReadError(f"{path}: Nblts {nblts} is not a multiple of {ntime} times")
    nbl = nblts // ntime
    t2 = times.reshape(ntime, nbl)
    if not np.all(t2 == t2[:, :1]) or not (np.all(a1.reshape(ntime, nbl) == a1[:nbl])
                                           and np.all(a2.reshape(ntime, nbl) == a2[:nbl])):
        raise ReadError(f"{path}: baselines are not time-major with a fixed baseline order")
    if shape != (nblts, 1, nfreq, npol):
        raise ReadError(f"{path}: visdata has shape {shape}, expected {(nblts, 1, nfreq, npol)}")
    return SubbandMeta(path, nblts, ntime, nbl, nfreq, npol, t2[:, 0].astype(np.float64), a1[:nbl], a2[:nbl],
                       freq, float(cw[0]), pols, float(meta_int[0]), names, numbers, positions, location, dec0)


def _mismatch(meta: SubbandMeta, ref: SubbandMeta, sb: int, ref_sb: int) -> str | None:
    if meta.nchan != ref.nchan:
        return f"has {meta.nchan} channels, the group's {ref.path.name} has {ref.nchan}"
    if meta.nbl != ref.nbl or not (np.array_equal(meta.ant1, ref.ant1) and np.array_equal(meta.ant2, ref.ant2)):
        return f"has different baselines ({meta.nbl}) from {ref.path.name} ({ref.nbl})"
    if meta.ntime != ref.ntime or not np.allclose(meta.time_jd, ref.time_jd, rtol=0, atol=1e-6):
        return f"has different integration times from {ref.path.name}"
    if not np.array_equal(meta.pols, ref.pols):
        return f"has polarizations {meta.pols.tolist()}, {ref.path.name} has {ref.pols.tolist()}"
    if not np.isclose(meta.chan_width_hz, ref.chan_width_hz):
        return f"has channel width {meta.chan_width_hz} Hz, {ref.path.name} has {ref.chan_width_hz} Hz"
    expected = ref.freq_hz + (sb - ref_sb) * ref.nchan * ref.chan_width_hz
    if not np.allclose(meta.freq_hz, expected, rtol=0, atol=abs(ref.chan_width_hz) / 10):
        return f"has frequencies {meta.freq_hz[0] / 1e6:.4f} MHz.. that do not fit subband {sb:02d}"
    return None


class _Weights:
    """The group's weights (nsamples) as the subbands are read: while every subband's are one
    value throughout (the correlator's usual output) only that value per channel is kept, and the
    result is a read-only broadcast view of it (no memory); the first block that differs makes
    the full (ntime, nbl, nchan, npol) float32 array. Thread-safe: the subbands are read in
    parallel."""

    def __init__(self, shape: tuple[int, int, int, int]):
        self.shape = shape
        self.per_channel = np.full(shape[2], np.nan, np.float32)  # NaN: no block read yet
        self.full: np.ndarray | None = None
        self._lock = threading.Lock()

    def put(self, t: int, chans: slice, block: np.ndarray) -> None:
        """Integration ``t``'s weights (nbl, nchan_sb, npol) of the channels ``chans``."""
        value = block.flat[0]
        uniform = bool((block == value).all())
        with self._lock:
            if self.full is None:
                seen = self.per_channel[chans]
                if uniform and (np.isnan(seen[0]) or seen[0] == value):
                    seen[:] = value
                    return
                # every block put so far was its subband's one value (blocks still to come overwrite theirs)
                self.full = np.empty(self.shape, np.float32)
                self.full[...] = np.nan_to_num(self.per_channel, nan=0.0)[None, None, :, None]
            self.full[t, :, chans, :] = block

    def zero(self, chans: slice) -> None:
        """A subband that could not be read: weight 0 on its channels."""
        with self._lock:
            if self.full is None:
                self.per_channel[chans] = 0.0
            else:
                self.full[:, :, chans, :] = 0.0

    def result(self) -> np.ndarray:
        if self.full is not None:
            return self.full
        per_channel = np.nan_to_num(self.per_channel, nan=0.0)  # NaN: a subband never read (missing)
        return np.broadcast_to(per_channel[None, None, :, None], self.shape)


@numba.njit(nogil=True, cache=True)
def _put_reversed(src, dst, t, c0):
    """``dst[t, b, c0 + nc - 1 - c, p] = src[b, 0, c, p]``: one integration of a subband
    (src (nb, 1, nc, npol), as the file stores it) into its channels of the group's (ntime, nbl,
    nchan, npol) array, in ascending frequency. Without the GIL: the subbands' threads copy
    while another reads."""
    nb, _, nc, npol = src.shape
    for b in range(nb):
        for c in range(nc):
            for p in range(npol):
                dst[t, b, c0 + nc - 1 - c, p] = src[b, 0, c, p]


def _read_into(meta: SubbandMeta, vis, flags, weights: _Weights, chans: slice) -> None:
    """One subband's data into its channels of the group arrays, one integration per h5py call:
    h5py holds the GIL while it reads, and short reads keep the service's event loop responsive.
    Each integration is read into the same buffers (``read_direct``: no fresh pages per read)."""
    nt, nb, nc, npol = meta.ntime, meta.nbl, meta.nchan, meta.npol
    vbuf = np.empty((nb, 1, nc, npol), np.complex64)
    fbuf = np.empty((nb, 1, nc, npol), bool)
    wbuf = np.empty((nb, 1, nc, npol), np.float32)
    with h5py.File(meta.path, "r") as f:
        d = f["Data"]
        visdata, flagdata, nsamples = d["visdata"], d["flags"], d["nsamples"]
        for t in range(nt):
            rows = np.s_[t * nb:(t + 1) * nb]
            visdata.read_direct(vbuf, rows)
            _put_reversed(vbuf, vis, t, chans.start)
            flagdata.read_direct(fbuf, rows)
            if fbuf.any():  # (``flags`` starts False: its pages stay untouched where the files flag nothing)
                _put_reversed(fbuf, flags, t, chans.start)
            nsamples.read_direct(wbuf, rows)
            weights.put(t, chans, wbuf.reshape(nb, nc, npol)[:, ::-1, :])


def _subband_ranges(sbs: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"sb00-sb02, sb05"``."""
    runs: list[list[int]] = []
    for sb in sorted(sbs):
        if runs and sb == runs[-1][1] + 1:
            runs[-1][1] = sb
        else:
            runs.append([sb, sb])
    return ", ".join(f"sb{a:02d}" if a == b else f"sb{a:02d}-sb{b:02d}" for a, b in runs)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _summary(problems: dict[int, str], kinds: dict[int, str], n_subbands: int) -> str:
    """The group's subband problems in one line: each bad file named with its reason, the missing
    subbands counted (``1 unreadable subband file (PATH: why); 15 of 16 subbands missing (sb01-sb15)``)."""
    parts = []
    for kind in ("unreadable", "mismatched"):
        sbs = [sb for sb in sorted(problems) if kinds[sb] == kind]
        if sbs:
            parts.append(f"{_plural(len(sbs), kind + ' subband file')} ("
                         + "; ".join(problems[sb] for sb in sbs) + ")")
    missing = [sb for sb in sorted(problems) if kinds[sb] == "missing"]
    if missing:
        parts.append(f"{len(missing)} of {n_subbands} subbands missing ({_subband_ranges(missing)})")
    return "; ".join(parts)


@lru_cache(maxsize=4)
def _pool(n_threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per size: threads made once, not per group (a new thread per read
    gets its own malloc arena, and a long-running service's memory then creeps up)."""
    return ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="contimg-h5")


def read_group(group: Group, *, n_subbands: int = 16, on_bad_subband: str = "flag", min_subbands: int = 1,
               read_threads: int = 4, vis_empty: Callable[[tuple, type], np.ndarray] = np.empty) -> VisChunk:
    """Read ``group`` into a `VisChunk` (ascending frequency, uvw cast to float64).

    on_bad_subband: "flag" (record the reason, flag its channels) or "fail" (raise `ReadError`).
    Raises `ReadError` when fewer than ``min_subbands`` subbands are usable. ``vis_empty(shape,
    dtype)`` makes the group's vis array, its contents undefined: every subband's channels are
    read or zeroed (`contimg.device.backend.host_empty`: pinned host memory for a group bound for
    a device; np.empty's huge pages otherwise).
    """
    gid = group.group_id
    problems: dict[int, str] = {}  # per subband, the reason (kept in the chunk, one entry each)
    kinds: dict[int, str] = {}  # per subband, "missing", "unreadable" or "mismatched"
    metas: dict[int, SubbandMeta] = {}
    for sb in range(n_subbands):
        path = group.files.get(sb)
        if path is None:
            problems[sb], kinds[sb] = f"group {gid}: subband sb{sb:02d} is missing", "missing"
            continue
        try:
            metas[sb] = read_subband_meta(path)
        except ReadError as exc:
            problems[sb], kinds[sb] = str(exc), "unreadable"
    if not metas:
        raise ReadError(f"group {gid}: no readable subband file: {_summary(problems, kinds, n_subbands)}")
    ref_sb = min(metas)
    ref = metas[ref_sb]
    for sb in sorted(metas):
        why = _mismatch(metas[sb], ref, sb, ref_sb) if sb != ref_sb else None
        if why:
            problems[sb], kinds[sb] = f"{metas.pop(sb).path}: {why}", "mismatched"
    if problems and on_bad_subband == "fail":
        raise ReadError(f"group {gid}: {_summary(problems, kinds, n_subbands)}")

    nchan_total = n_subbands * ref.nchan
    shape = (ref.ntime, ref.nbl, nchan_total, ref.npol)
    vis = vis_empty(shape, np.complex64)  # every channel read or zeroed below
    # False until a file flags something: fresh zero pages are not resident until written, and
    # files that flag nothing (the usual case) then cost no memory for their flags until the flagger
    # runs (a read-ahead group waits a whole imaging stage: 0.16 GiB at real size)
    flags = np.zeros(shape, bool)
    weights = _Weights(shape)

    def chans_of(sb: int) -> slice:
        return slice(nchan_total - (sb + 1) * ref.nchan, nchan_total - sb * ref.nchan)

    def work(sb: int) -> tuple[int, str | None]:
        try:
            _read_into(metas[sb], vis, flags, weights, chans_of(sb))
            return sb, None
        except (OSError, KeyError, ValueError) as exc:
            return sb, f"{metas[sb].path}: cannot read the data ({type(exc).__name__}: {exc})"

    for sb, err in _pool(read_threads).map(work, sorted(metas)):
        if err:
            problems[sb], kinds[sb] = err, "unreadable"
            metas.pop(sb)
            vis[:, :, chans_of(sb), :] = 0
            weights.zero(chans_of(sb))
    for sb in set(range(n_subbands)) - set(metas):  # missing, mismatched or unreadable: zero, flagged
        vis[:, :, chans_of(sb), :] = 0
        flags[:, :, chans_of(sb), :] = True
    if problems and on_bad_subband == "fail":
        raise ReadError(f"group {gid}: {_summary(problems, kinds, n_subbands)}")
    if len(metas) < min_subbands:
        raise ReadError(f"group {gid}: only {len(metas)} usable subbands (< {min_subbands}): "
                        f"{_summary(problems, kinds, n_subbands)}")
    if problems:  # one line per group, however many subbands
        log.warning("group %s: %s (flagged)", gid, _summary(problems, kinds, n_subbands))

    all_freq_desc = ref.freq_hz[0] + (np.arange(nchan_total) - ref_sb * ref.nchan) * ref.chan_width_hz
    with h5py.File(ref.path, "r") as f:
        uvw = f["Header"]["uvw_array"][()].astype(np.float64).reshape(ref.ntime, ref.nbl, 3)
    lat, lon, alt = ref.location
    centre = XYZ_from_LatLonAlt(lat, lon, alt)
    enu = ENU_from_ECEF(np.asarray(ref.antenna_positions_m, np.float64) + centre, latitude=lat, longitude=lon,
                        altitude=alt)
    enu_by_number = np.zeros((int(ref.antenna_numbers.max()) + 1, 3))
    enu_by_number[ref.antenna_numbers] = enu
    names = np.array([""] * enu_by_number.shape[0], dtype=object)
    names[ref.antenna_numbers] = ref.antenna_names
    present = np.zeros(n_subbands, bool)
    present[list(metas)] = True
    chunk = VisChunk(
        group_id=group.group_id, vis=vis, flags=flags, weights=weights.result(), uvw_m=uvw, time_jd=ref.time_jd,
        freq_hz=all_freq_desc[::-1].copy(), ant1=ref.ant1.astype(np.int64), ant2=ref.ant2.astype(np.int64),
        antenna_names=names.astype(str), antenna_enu_m=enu_by_number, pols=np.asarray(ref.pols),
        pointing_dec_rad=ref.pointing_dec_rad, int_time_s=ref.int_time_s, chan_width_hz=abs(ref.chan_width_hz),
        subbands_present=present, files={sb: str(m.path) for sb, m in metas.items()},
        problems=[problems[sb] for sb in sorted(problems)],
    )
    chunk.check()
    return chunk

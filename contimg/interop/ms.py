"""A group as other tools read it: a Measurement Set (`write_ms`) and UVFITS/UVH5 of the
calibrated data (`write_calibrated`); what a processed group holds is gathered by
`contimg.pipeline.exports`.

Measurement Set: DATA (raw), CORRECTED_DATA (the gains contimg applied),
MODEL_DATA (the sky catalogue through the primary beam), FLAG (contimg's flags), WEIGHT and
WEIGHT_SPECTRUM, UVW and the subtables CASA and WSClean read — written by pyuvdata's MS writer
(python-casacore, no CASA installation), the two extra data columns added with python-casacore.

The files hold data fringe-stopped to the meridian (HA 0 at the pointing declination) at every
integration: to pyuvdata a "driftscan" phase centre fixed in azimuth and elevation. For the MS it
is rephased (pyuvdata computes the new uvw from the antenna positions) to

- ``"midtime"``: one field, the ICRS position of the meridian at mid-group (what contimg
  images), or
- ``"per_integration"``: one field per integration, the ICRS position of the meridian at that
  integration (the real pipeline's convention).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import numba
import numpy as np

from contimg.io.chunk import VisChunk

log = logging.getLogger(__name__)

__all__ = ["chunk_to_uvdata", "phase_uvdata", "write_ms", "write_calibrated"]


def _telescope():
    from astropy import units as u
    from pyuvdata import Telescope

    from contimg.sky.telescope import array_location, stations

    st = stations()
    loc = array_location()
    return Telescope.new(name="DSA-110", location=loc, instrument="DSA",
                         antenna_positions=st.ecef_m - loc.itrs.cartesian.xyz.to_value(u.m),
                         antenna_names=list(st.names), antenna_numbers=list(st.numbers),
                         antenna_diameters=np.full(st.numbers.size, 4.65), feeds=["x", "y"], x_orientation="east",
                         mount_type="alt-az", update_from_known=False)


def chunk_to_uvdata(chunk: VisChunk, *, vis: np.ndarray | None = None, metadata_only: bool = False):
    """A pyuvdata `UVData` of ``chunk`` (or of ``vis`` with the chunk's metadata): the driftscan
    phase centre at the meridian of the pointing declination, time-major baseline-times,
    ascending frequencies, flags and nsamples from the chunk. vis: (ntime, nbl, nchan, npol).
    The arrays are copies (pyuvdata phases in place); ``metadata_only``: no data arrays at all."""
    from astropy import units as u
    from astropy.coordinates import AltAz, HADec, SkyCoord
    from astropy.time import Time
    from pyuvdata import UVData

    from contimg.sky.telescope import array_location

    ntime, nbl, nchan, npol = chunk.shape
    mid = Time(float(np.mean(chunk.time_jd)), format="jd", scale="utc")
    loc = array_location()
    hadec = SkyCoord(ha=0 * u.rad, dec=chunk.pointing_dec_rad * u.rad,
                     frame=HADec(obstime=mid, location=loc, pressure=0 * u.hPa))
    altaz = hadec.transform_to(AltAz(obstime=mid, location=loc, pressure=0 * u.hPa))
    catalog = {0: {"cat_name": "meridian", "cat_type": "driftscan", "cat_lon": float(altaz.az.rad),
                   "cat_lat": float(altaz.alt.rad), "cat_frame": "altaz", "cat_epoch": None,
                   "cat_times": None, "cat_pm_ra": None, "cat_pm_dec": None, "cat_dist": None, "cat_vrad": None,
                   "info_source": "contimg"}}
    data = chunk.vis if vis is None else vis
    with warnings.catch_warnings():  # the uvw it computes are those of the data: nothing to adjust
        warnings.filterwarnings("ignore", message="Recalculating uvw_array")
        uv = _new_uvdata(UVData, chunk, None if metadata_only else data, catalog)
    return uv


def _new_uvdata(UVData, chunk: VisChunk, data: np.ndarray | None, catalog: dict):
    ntime, nbl, nchan, npol = chunk.shape
    shape = (ntime * nbl, nchan, npol)
    arrays = {} if data is None else {
        "data_array": data.reshape(shape).copy(), "flag_array": chunk.flags.reshape(shape).copy(),
        "nsample_array": chunk.weights.reshape(shape).astype(np.float32)}
    return UVData.new(
        freq_array=chunk.freq_hz, polarization_array=chunk.pols, times=chunk.time_jd, telescope=_telescope(),
        antpairs=np.stack([chunk.ant1, chunk.ant2], axis=1), do_blt_outer=True, time_axis_faster_than_bls=False,
        integration_time=chunk.int_time_s, channel_width=chunk.chan_width_hz,
        **arrays,
        phase_center_catalog=catalog, phase_center_id_array=np.zeros(ntime * nbl, int), vis_units="Jy",
        history=f"contimg export of group {chunk.group_id}")


def phase_uvdata(uv, *, phasing: str, pointing_dec_rad: float) -> None:
    """Rephase ``uv`` (in place) from the meridian driftscan to ICRS field(s)."""
    from contimg.sky.geometry import hadec_to_icrs

    dec_app = pointing_dec_rad
    times = np.unique(uv.time_array)
    if phasing == "midtime":
        ra, dec = hadec_to_icrs(ha_rad=0.0, dec_rad=dec_app, time_jd=float(np.mean(times)))
        uv.phase(ra=ra, dec=dec, epoch="J2000", cat_name="meridian_midtime", cat_type="sidereal")
    elif phasing == "per_integration":
        for k, t in enumerate(times):
            ra, dec = hadec_to_icrs(ha_rad=0.0, dec_rad=dec_app, time_jd=float(t))
            uv.phase(ra=ra, dec=dec, epoch="J2000", cat_name=f"meridian_{k:03d}", cat_type="sidereal",
                     select_mask=np.isclose(uv.time_array, t, rtol=0, atol=1e-9))
    else:
        raise ValueError(f"MS phasing must be 'midtime' or 'per_integration', got {phasing!r}")


def write_ms(path: Path, *, chunk: VisChunk, corrected: np.ndarray | None, model: np.ndarray | None,
             phasing: str = "midtime") -> Path:
    """Write ``chunk`` (DATA) with ``corrected`` and ``model`` (like chunk.vis) as a Measurement
    Set at ``path`` (replaced whole: written under a temporary name, then renamed)."""
    from casacore import tables

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    # Rephasing multiplies each baseline-time and channel by exp(-2πi Δw f / c), the same for every
    # polarization and column (pyuvdata's w projection): phase the metadata with pyuvdata, then
    # apply that factor to each column here, in parallel.
    uv = chunk_to_uvdata(chunk, metadata_only=True)
    w_before = uv.uvw_array[:, 2].copy()
    phase_uvdata(uv, phasing=phasing, pointing_dec_rad=chunk.pointing_dec_rad)
    factor = np.empty((uv.Nblts, uv.Nfreqs), np.complex64)
    _w_factor(uv.uvw_array[:, 2] - w_before, np.asarray(uv.freq_array, np.float64).ravel() / 299792458.0, factor)
    shape = (uv.Nblts, uv.Nfreqs, uv.Npols)

    def phased(vis: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``vis`` rephased, its baseline-times put at ``rows`` (default: in order)."""
        out = np.empty(shape, np.complex64)
        _phase_rows(vis.reshape(shape), factor, np.arange(shape[0]) if rows is None else rows, out)
        return out

    uv.data_array = phased(chunk.vis)
    uv.flag_array = chunk.flags.reshape(shape).copy()
    uv.nsample_array = chunk.weights.reshape(shape).astype(np.float32)
    uv.write_ms(str(tmp), clobber=True, flip_conj=False, run_check=False)
    with tables.table(str(tmp), readonly=False, ack=False) as ms:
        row_of = _row_index(ms, uv)
        desc = ms.getcoldesc("DATA")
        for column, vis in (("CORRECTED_DATA", corrected), ("MODEL_DATA", model)):
            if vis is None:
                continue
            cd = dict(desc)
            cd["comment"] = {"CORRECTED_DATA": "calibrated by contimg", "MODEL_DATA": "sky catalogue model"}[column]
            ms.addcols(tables.maketabdesc(tables.makecoldesc(column, cd)))
            ms.putcol(column, phased(vis, row_of))
        if "WEIGHT_SPECTRUM" not in ms.colnames():
            wdesc = ms.getcoldesc("WEIGHT")
            wdesc = dict(wdesc, ndim=2, comment="per-channel weight (nsamples)")
            wdesc.pop("shape", None)
            ms.addcols(tables.maketabdesc(tables.makecoldesc("WEIGHT_SPECTRUM", wdesc)))
            spectrum = np.empty((ms.nrows(),) + uv.nsample_array.shape[1:], np.float32)
            spectrum[row_of] = uv.nsample_array
            ms.putcol("WEIGHT_SPECTRUM", spectrum)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    log.info("wrote %s (%s, %d rows) in %.1f s", path, phasing, uv.Nblts, time.perf_counter() - t0)
    return path


@numba.njit(parallel=True, cache=True, nogil=True)
def _w_factor(delta_w_m, freq_over_c, out):
    """out[b, c] = exp(-2πi Δw[b] f[c] / c) (pyuvdata's sign), per baseline-time in parallel."""
    for b in numba.prange(delta_w_m.size):
        for c in range(freq_over_c.size):
            phase = -2.0 * np.pi * delta_w_m[b] * freq_over_c[c]
            out[b, c] = np.cos(phase) + 1j * np.sin(phase)


@numba.njit(parallel=True, cache=True, nogil=True)
def _phase_rows(vis, factor, rows, out):
    """out[rows[b]] = vis[b] * factor[b] (per channel, every polarization), in parallel."""
    nblt, nchan, npol = vis.shape
    for b in numba.prange(nblt):
        r = rows[b]
        for c in range(nchan):
            f = factor[b, c]
            for p in range(npol):
                out[r, c, p] = vis[b, c, p] * f


def _row_index(ms, uv) -> np.ndarray:
    """For each baseline-time of ``uv``, its row in ``ms`` (matched on time and antennas)."""
    t = np.round((ms.getcol("TIME") / 86400.0 + 2400000.5 - uv.time_array.min()) * 86400.0 * 1e3).astype(np.int64)
    a1, a2 = ms.getcol("ANTENNA1"), ms.getcol("ANTENNA2")
    key_ms = (t * 1000 + a1) * 1000 + a2
    tu = np.round((uv.time_array - uv.time_array.min()) * 86400.0 * 1e3).astype(np.int64)
    # pyuvdata's MS antenna index is the position in the telescope's antenna list
    index = {n: k for k, n in enumerate(uv.telescope.antenna_numbers)}
    k1 = np.array([index[a] for a in uv.ant_1_array])
    k2 = np.array([index[a] for a in uv.ant_2_array])
    key_uv = (tu * 1000 + k1) * 1000 + k2
    order = np.argsort(key_ms)
    pos = np.searchsorted(key_ms[order], key_uv)
    if np.any(pos >= key_ms.size) or np.any(key_ms[order][np.minimum(pos, key_ms.size - 1)] != key_uv):
        raise RuntimeError("the Measurement Set's rows do not match the data written (time/antenna keys)")
    return order[pos]


def write_calibrated(out: Path, *, chunk: VisChunk, corrected: np.ndarray) -> Path:
    """``corrected`` (the chunk's shape) as UVFITS (``.uvfits``) or UVH5 (``.uvh5``), phased to
    the meridian at mid-group, written by pyuvdata under a temporary name."""
    out = Path(out)
    kinds = {".uvfits": "write_uvfits", ".uvh5": "write_uvh5"}
    if out.suffix not in kinds:
        raise ValueError(f"{out}: the name must end in .uvfits or .uvh5")
    uv = chunk_to_uvdata(chunk, vis=corrected)
    phase_uvdata(uv, phasing="midtime", pointing_dec_rad=chunk.pointing_dec_rad)
    uv.history += " (calibrated: CORRECTED data)"
    tmp = out.with_name(out.name + ".tmp" + out.suffix)
    tmp.unlink(missing_ok=True)
    getattr(uv, kinds[out.suffix])(str(tmp), run_check=False)
    os.replace(tmp, out)
    return out

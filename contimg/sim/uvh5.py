"""Write one subband file exactly as the DSA-110 correlator writer does (UVH5, pyuvdata 2.x
header layout): time-major baselines, ``visdata`` (Nblts, 1, Nfreqs, Npols) complex64,
descending frequencies, float32 ``uvw_array``, ``phase_type = "drift"`` although the data are
fringe-stopped to HA 0, and the real ``extra_keywords``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

__all__ = ["SubbandHeader", "write_subband_file"]


@dataclass(frozen=True)
class SubbandHeader:
    time_jd: np.ndarray  # (ntime,) float64, integration centres
    lst_rad: np.ndarray  # (ntime,) float64
    int_time_s: float
    freq_hz: np.ndarray  # (nchan,) float64, descending
    chan_width_hz: float  # negative
    ant1: np.ndarray  # (nbl,) int antenna numbers
    ant2: np.ndarray  # (nbl,)
    uvw_m: np.ndarray  # (nbl, 3) float64, constant in time for a drift (HA 0) phase centre
    antenna_names: np.ndarray  # (117,) str
    antenna_numbers: np.ndarray  # (117,) int
    antenna_positions_m: np.ndarray  # (117, 3) ECEF relative to the telescope location
    lat_deg: float
    lon_deg: float
    alt_m: float
    pointing_dec_rad: float
    applied_delays_ns: str
    pols: tuple[int, ...] = (-5, -6)


def write_subband_file(path: Path, *, header: SubbandHeader, vis: np.ndarray) -> None:
    """Write ``vis`` (ntime, nbl, nchan, npol) complex64 to ``path`` through a ``_incomplete``
    name, renamed when complete (as the telescope does)."""
    ntime, nbl, nchan, npol = vis.shape
    nblts = ntime * nbl
    incomplete = path.with_name(path.name.replace(".hdf5", "_incomplete.hdf5"))
    with h5py.File(incomplete, "w") as f:
        h = f.create_group("Header")
        scalars = {
            "Nants_data": np.unique(np.concatenate([header.ant1, header.ant2])).size,
            "Nants_telescope": header.antenna_numbers.size, "Nbls": nbl, "Nblts": nblts,
            "Nfreqs": nchan, "Npols": npol, "Nspws": 1, "Ntimes": ntime,
            "latitude": header.lat_deg, "longitude": header.lon_deg, "altitude": header.alt_m,
            "channel_width": header.chan_width_hz,
        }
        for k, v in scalars.items():
            h[k] = v
        for k, v in {"telescope_name": "OVRO_MMA", "instrument": "DSA", "object_name": "search",
                     "phase_type": "drift", "vis_units": "uncalib", "version": "1.0",
                     "history": "Written by contimg.sim (DSA-110 simulator)",
                     "x_orientation": "east"}.items():
            h[k] = np.bytes_(v)
        h["ant_1_array"] = np.tile(header.ant1, ntime).astype(np.int64)
        h["ant_2_array"] = np.tile(header.ant2, ntime).astype(np.int64)
        h["antenna_names"] = np.array([n.encode() for n in header.antenna_names])
        h["antenna_numbers"] = header.antenna_numbers.astype(np.int64)
        h["antenna_positions"] = header.antenna_positions_m
        h["antenna_diameters"] = np.full(header.antenna_numbers.size, 4.65)
        h["freq_array"] = header.freq_hz[None, :]
        h["spw_array"] = np.array([0], np.int64)
        h["polarization_array"] = np.array(header.pols, np.int64)
        h["integration_time"] = np.full(nblts, header.int_time_s)
        h["time_array"] = np.repeat(header.time_jd, nbl)
        h["lst_array"] = np.repeat(header.lst_rad, nbl)
        h["uvw_array"] = np.tile(header.uvw_m, (ntime, 1)).astype(np.float32)
        ek = h.create_group("extra_keywords")
        ek["phase_center_dec"] = header.pointing_dec_rad
        ek["ha_phase_center"] = 0.0
        ek["phase_center_epoch"] = np.bytes_("HADEC")
        ek["applied_delays_ns"] = np.bytes_(header.applied_delays_ns)
        d = f.create_group("Data")
        d.create_dataset("visdata", data=vis.reshape(nblts, 1, nchan, npol))
        d.create_dataset("flags", data=np.zeros((nblts, 1, nchan, npol), bool))
        d.create_dataset("nsamples", data=np.ones((nblts, 1, nchan, npol), np.float32))
    os.replace(incomplete, path)

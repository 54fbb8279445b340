"""Zarr intermediates and stored gain solutions, written atomically (temporary folder, rename).

Per group, under ``<root>/products/<group_id>/``:
- ``flags.zarr``: the flags after flagging (ntime, nbl, nchan, npol) and flag statistics —
  with the raw files this re-runs calibration and imaging without re-flagging;
- ``cal.zarr``: the gains applied (nant, nchan, npol), their flags and SNR, and the time gains
  applied per integration (ntime, nant, npol) when there were any;
- ``image.zarr``: every image of the `ImageSet` and its metadata.
Solutions solved on a calibrator are also kept — the bandpass in ``<root>/cal/<group_id>.zarr``,
the time-dependent gains in ``<root>/cal/gains/<group_id>.zarr`` — and registered in ``<root>/state/cal_registry.sqlite3`` (`contimg.calregistry`), which decides what
the groups without a calibrator get.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import zarr

from contimg.calibrate import GainSolution, TimeGains
from contimg.imaging.imager import ImageSet

__all__ = ["write_zarr", "read_zarr", "save_solution", "load_solution", "save_time_gains", "load_time_gains",
           "save_imageset", "load_imageset"]


def _chunks(arr: np.ndarray, target_bytes: int = 32 * 2**20) -> tuple[int, ...]:
    """Few, large chunks split along the first axis (each chunk is a task in zarr's own thread
    pool; thousands of small ones keep the GIL busy and the service's event loop waiting)."""
    if arr.ndim == 0 or arr.nbytes <= target_bytes:
        return arr.shape or ()
    per_row = max(arr.nbytes // max(arr.shape[0], 1), 1)
    return (max(1, target_bytes // per_row), *arr.shape[1:])


def write_zarr(path: Path, *, arrays: dict[str, np.ndarray], attrs: dict) -> Path:
    """Write arrays and JSON attrs to a Zarr group at ``path``, replacing it whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    grp = zarr.open_group(str(tmp), mode="w")
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        grp.create_array(name, data=arr, chunks=_chunks(arr))
    grp.attrs.update(json.loads(json.dumps(attrs, default=float)))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def read_zarr(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    grp = zarr.open_group(str(path), mode="r")
    return {name: arr[...] for name, arr in grp.arrays()}, dict(grp.attrs)


def save_solution(path: Path, sol: GainSolution) -> Path:
    return write_zarr(path, arrays={"antenna_numbers": sol.antenna_numbers, "freq_hz": sol.freq_hz,
                                    "gains": sol.gains, "flags": sol.flags, "snr": sol.snr},
                      attrs={"refant": sol.refant, "mid_jd": sol.mid_jd, "calibrator": sol.calibrator,
                             "group_id": sol.group_id, "iterations": sol.iterations, **sol.meta})


def load_solution(path: Path) -> GainSolution:
    arrays, attrs = read_zarr(path)
    meta = {k: v for k, v in attrs.items() if k not in ("refant", "mid_jd", "calibrator", "group_id", "iterations")}
    return GainSolution(arrays["antenna_numbers"], arrays["freq_hz"], arrays["gains"], arrays["flags"],
                        arrays["snr"], attrs["refant"], attrs["mid_jd"], attrs["calibrator"], attrs["group_id"],
                        attrs.get("iterations", 0), meta)


def save_time_gains(path: Path, tg: TimeGains) -> Path:
    return write_zarr(path, arrays={"antenna_numbers": tg.antenna_numbers, "time_jd": tg.time_jd, "gains": tg.gains,
                                    "flags": tg.flags, "snr": tg.snr},
                      attrs={"refant": tg.refant, "calibrator": tg.calibrator, "group_id": tg.group_id,
                             "calmode": tg.calmode, "interval_s": tg.interval_s, "iterations": tg.iterations,
                             "cal_type": "gains", **tg.meta})


def load_time_gains(path: Path) -> TimeGains:
    arrays, attrs = read_zarr(path)
    keys = ("refant", "calibrator", "group_id", "calmode", "interval_s", "iterations", "cal_type")
    return TimeGains(arrays["antenna_numbers"], arrays["time_jd"], arrays["gains"], arrays["flags"], arrays["snr"],
                     attrs["refant"], attrs["calibrator"], attrs["group_id"], attrs["calmode"],
                     float(attrs["interval_s"]), int(attrs.get("iterations", 0)),
                     {k: v for k, v in attrs.items() if k not in keys})


_IMAGESET_SCALARS = ("ra_rad", "dec_rad", "cell_rad", "freq_hz", "bandwidth_hz", "time_start_jd", "time_mid_jd",
                     "noise_jy", "peak_jy", "clean_iterations")


def save_imageset(path: Path, imgs: ImageSet, *, extra: dict | None = None) -> Path:
    """Every image of ``imgs`` and its metadata (plus ``extra`` attrs) as one Zarr group."""
    attrs = {k: getattr(imgs, k) for k in _IMAGESET_SCALARS}
    attrs.update(beam_rad=list(imgs.beam_rad), stats=imgs.stats, ra_deg=float(np.degrees(imgs.ra_rad)),
                 dec_deg=float(np.degrees(imgs.dec_rad)), **(extra or {}))
    return write_zarr(path, arrays=imgs.images, attrs=attrs)


def load_imageset(path: Path) -> tuple[ImageSet, dict]:
    """The `ImageSet` saved by `save_imageset`, and all the attrs."""
    arrays, attrs = read_zarr(path)
    imgs = ImageSet(images=arrays, beam_rad=tuple(attrs["beam_rad"]), stats=attrs.get("stats", {}),
                    **{k: attrs[k] for k in _IMAGESET_SCALARS})
    return imgs, attrs

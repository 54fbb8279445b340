"""Zarr groups written atomically (temporary folder, rename): the format of contimg's
intermediates and stored solutions (`contimg.calibrate.storage`, `contimg.imaging.storage`).

Per group, under ``<root>/products/<group_id>/``:
- ``flags.zarr``: the flags after flagging (ntime, nbl, nchan, npol) and flag statistics —
  with the raw files this re-runs calibration and imaging without re-flagging;
- ``cal.zarr``: the gains applied (nant, nchan, npol), their flags and SNR, and the time gains
  applied per integration (ntime, nant, npol) when there were any;
- ``image.zarr``: every image of the `ImageSet` and its metadata.
Solutions solved on a calibrator are also kept — the bandpass in ``<root>/cal/<group_id>.zarr``,
the time-dependent gains in ``<root>/cal/gains/<group_id>.zarr`` — and registered in ``<root>/state/cal_registry.sqlite3`` (`contimg.state.calregistry`), which decides what
the groups without a calibrator get.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import zarr


__all__ = ["write_zarr", "read_zarr"]


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


def read_zarr(path: Path, names: tuple[str, ...] | None = None, *,
              columns: slice | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of the Zarr group at ``path`` (only ``names``, when given) and its attrs;
    ``columns``: only these of each 2-D array's last axis (the rest is not read)."""
    grp = zarr.open_group(str(path), mode="r")
    part = (slice(None), columns) if columns is not None else Ellipsis
    return {name: arr[part] for name, arr in grp.arrays() if names is None or name in names}, dict(grp.attrs)

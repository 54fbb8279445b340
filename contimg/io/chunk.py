"""`VisChunk`: one group of visibilities in memory (host numpy or device cupy arrays).

The three big arrays — ``vis``, ``flags``, ``weights`` — move between the host and the device
as a whole (`VisChunk.to_device`, `VisChunk.to_host`), each move counted in the chunk's
`contimg.device.transfer.TransferCounter`; the rest (times, frequencies, uvw, antennas) stays
on the host, where the geometry is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contimg.device.backend import TWIN, is_device, module_name
from contimg.device.transfer import TransferCounter, download, upload, upload_flags

__all__ = ["VisChunk", "ChunkShapeError"]


def _cupy():
    import cupy

    return cupy


_MODULES = {"numpy": lambda: np, "twin": lambda: TWIN, "cupy": _cupy}


class ChunkShapeError(ValueError):
    """A `VisChunk` array does not have the shape or dtype its dimensions require."""


@dataclass
class VisChunk:
    """One group, all subbands, channels in **ascending** frequency.

    Dimensions: ntime, nbl (baselines incl. autos), nchan (all subbands), npol.
    """

    group_id: str
    vis: np.ndarray  # (ntime, nbl, nchan, npol) complex64
    flags: np.ndarray  # (ntime, nbl, nchan, npol) bool, True = bad
    # (ntime, nbl, nchan, npol) float32 (nsamples); a read-only broadcast view of one value per
    # channel when the files' are uniform (the reader's usual result: no memory), never written to
    weights: np.ndarray
    uvw_m: np.ndarray  # (ntime, nbl, 3) float64, towards the drift phase centre
    time_jd: np.ndarray  # (ntime,) float64, integration centres (UTC JD)
    freq_hz: np.ndarray  # (nchan,) float64, ascending
    ant1: np.ndarray  # (nbl,) int, antenna numbers
    ant2: np.ndarray  # (nbl,) int
    antenna_names: np.ndarray  # (nant_telescope,) str, indexed by antenna number
    antenna_enu_m: np.ndarray  # (nant_telescope, 3) float64, ENU at the array reference
    pols: np.ndarray  # (npol,) int AIPS codes (-5 XX, -6 YY)
    pointing_dec_rad: float  # apparent declination of the HA = 0 phase centre
    int_time_s: float
    chan_width_hz: float  # positive (channels ascending)
    subbands_present: np.ndarray  # (n_subbands,) bool, index = subband number (sb00 highest)
    files: dict[int, str] = field(default_factory=dict)  # subband -> path, the files read
    problems: list[str] = field(default_factory=list)  # per bad/missing subband, the reason
    # where vis/flags/weights live: "numpy" (the host), "cupy", or "twin" (the device path's
    # array code on numpy, `contimg.device.backend.TWIN`); a name, so the chunk pickles
    location: str = "numpy"
    transfers: TransferCounter = field(default_factory=TransferCounter, repr=False, compare=False)

    @property
    def xp(self):
        """The array module of vis/flags/weights."""
        return _MODULES[self.location]()

    @property
    def on_device(self) -> bool:
        return is_device(self.xp)

    def to_device(self, xp) -> None:
        """Move vis, flags (as bits) and weights onto ``xp``'s device, once: a no-op when they
        are there, or for numpy (then `to_host`). Counted in ``transfers``."""
        if not is_device(xp):
            self.to_host()
            return
        if self.xp is xp:
            return
        if self.on_device:  # another device module (cupy <-> twin): through the host
            self.to_host()
        c = self.transfers
        self.vis = upload(self.vis, xp=xp, counter=c, label="vis")
        self.flags = upload_flags(self.flags, xp=xp, counter=c, label="flags")
        self.weights = upload(self.weights, xp=xp, counter=c, label="weights")
        self.location = module_name(xp)

    def to_host(self) -> None:
        """Bring vis, flags and weights back to the host (a no-op when they are there); counted."""
        if not self.on_device:
            return
        xp, c = self.xp, self.transfers
        self.vis = download(self.vis, xp=xp, counter=c, label="vis")
        self.flags = download(self.flags, xp=xp, counter=c, label="flags")
        self.weights = download(self.weights, xp=xp, counter=c, label="weights")
        self.location = "numpy"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.vis.shape

    def check(self) -> None:
        """Compare every array's shape and dtype with the chunk's dimensions; raise
        `ChunkShapeError` naming the first mismatch."""
        ntime, nbl, nchan, npol = self.vis.shape
        expect = {
            "vis": ((ntime, nbl, nchan, npol), np.complex64),
            "flags": ((ntime, nbl, nchan, npol), np.bool_),
            "weights": ((ntime, nbl, nchan, npol), np.float32),
            "uvw_m": ((ntime, nbl, 3), np.float64),
            "time_jd": ((ntime,), np.float64),
            "freq_hz": ((nchan,), np.float64),
            "ant1": ((nbl,), None),
            "ant2": ((nbl,), None),
            "pols": ((npol,), None),
        }
        for name, (shape, dtype) in expect.items():
            arr = getattr(self, name)
            if tuple(arr.shape) != shape:
                raise ChunkShapeError(f"group {self.group_id}: {name} has shape {tuple(arr.shape)}, expected {shape}")
            if dtype is not None and arr.dtype != dtype:
                raise ChunkShapeError(f"group {self.group_id}: {name} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
        if nchan > 1 and not np.all(np.diff(np.asarray(self.freq_hz)) > 0):
            raise ChunkShapeError(f"group {self.group_id}: freq_hz is not ascending")

    @property
    def cross(self) -> np.ndarray:
        """(nbl,) bool, True for cross-correlations."""
        return self.ant1 != self.ant2

"""Model visibilities of the calibrators and field sources for the solvers."""

from __future__ import annotations

import numpy as np

from contimg.device.backend import array_module
from contimg.io.chunk import VisChunk
from contimg.sky.calibrators import Calibrator
from contimg.sky.skymodel import PointSources, sky_visibilities

__all__ = ["calibrator_model"]


def calibrator_model(*, chunk: VisChunk, calibrators: list[Calibrator],
                     field_sources: PointSources | None = None, baselines: np.ndarray | None = None,
                     compact: bool = False, backend: str = "cpu", array_code: bool | None = None):
    """Model visibilities (ntime, nbl, nchan) complex64 (XX = YY) of listed calibrators — the
    transiting one and any other bright listed source in the beam — plus the field's sources
    of the sky catalogue (``field_sources``), each through the primary beam.

    ``baselines`` (nbl,) bool: predict only these, the others are 0 (the solvers read only
    the baselines they select, e.g. ``baseline_m >= min_baseline_m``, and the prediction costs
    the same per baseline); ``compact``: return only those, (ntime, nsel, nchan) in order (the
    solvers take that too, and a fifth of the baselines is a fifth of the memory). backend "cpu", "gpu" or "auto": on the GPU (or with ``array_code``
    on the CPU) the direct sum runs as array code and the model stays on the device (the
    solvers take it there)."""
    src = PointSources.from_calibrators(calibrators)
    if field_sources is not None and len(field_sources):
        src = PointSources.concat([src, field_sources])
    xp = array_module(backend)
    use_xp = xp if (xp is not np or array_code) else None
    b_enu = chunk.antenna_enu_m[chunk.ant2] - chunk.antenna_enu_m[chunk.ant1]
    if baselines is None:
        return sky_visibilities(sources=src, time_jd=chunk.time_jd, freq_hz=chunk.freq_hz, b_enu_m=b_enu,
                                pointing_dec_rad=chunk.pointing_dec_rad, xp=use_xp)
    baselines = np.asarray(baselines, bool)
    if compact:
        return sky_visibilities(sources=src, time_jd=chunk.time_jd, freq_hz=chunk.freq_hz, b_enu_m=b_enu[baselines],
                                pointing_dec_rad=chunk.pointing_dec_rad, xp=use_xp)
    out = xp.zeros((chunk.time_jd.size, b_enu.shape[0], chunk.freq_hz.size), np.complex64)
    out[:, xp.asarray(baselines)] = sky_visibilities(
        sources=src, time_jd=chunk.time_jd, freq_hz=chunk.freq_hz, b_enu_m=b_enu[baselines],
        pointing_dec_rad=chunk.pointing_dec_rad, xp=use_xp)
    return out

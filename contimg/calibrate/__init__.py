"""Gain calibration on a transiting calibrator: model, solve, apply.

Measurement equation per channel c, polarization p (XX, YY), integration t and baseline
(i, j) = (ant1, ant2): ``V_ij = B_i conj(B_j) G_i(t) conj(G_j(t)) M_ij``, with ``M`` the
calibrator (and the other listed and catalogue sources in the beam) through the Airy beam.

- the bandpass ``B`` (`solve_gains`): one complex gain per antenna, channel and polarization
  over the whole group (its mean gain folded in), optionally with each antenna's delay fitted
  (`fit_delays`) and taken out before smoothing over channels;
- the time-dependent gains ``G`` (`solve_time_gains`): one per solution interval, antenna and
  polarization over the band, with ``B`` divided out; amplitude and phase, or phase only.

Both by StEFCal, on the CPU (numba, `contimg.calibrate.cpu`) or the GPU (cupy array code,
`contimg.calibrate.xp`). Applying (`apply_gains`) divides ``V_ij`` by the gains; a flagged
gain flags its baselines. `contimg.calibrate.registry` decides which tables a group gets; `contimg.calibrate.oncalibrator`
solves a group on its calibrator.
"""

from __future__ import annotations

from contimg.calibrate.apply import apply_gains, fold_time_gains, time_gains_at
from contimg.calibrate.solution import GainSolution, TimeGains
from contimg.calibrate.solve import (fit_delays, remove_delays, smooth_over_channels, solution_intervals,
                                     solve_gains, solve_time_gains)
from contimg.calibrate.model import calibrator_model

__all__ = ["GainSolution", "TimeGains", "calibrator_model", "solve_gains", "solve_time_gains", "solution_intervals",
           "fit_delays", "remove_delays", "smooth_over_channels", "apply_gains", "time_gains_at", "fold_time_gains"]

"""What a solve leaves: a bandpass table and a time-dependent gains table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["GainSolution", "TimeGains"]


@dataclass
class GainSolution:
    """Per-antenna complex bandpass for one group: one gain per antenna, channel and
    polarization over the whole group (the mean gain over the group folded in)."""

    antenna_numbers: np.ndarray  # (nant,) int
    freq_hz: np.ndarray  # (nchan,) ascending
    gains: np.ndarray  # (nant, nchan, npol) complex64
    flags: np.ndarray  # (nant, nchan, npol) bool
    snr: np.ndarray  # (nant, nchan, npol) float32
    refant: str
    mid_jd: float
    calibrator: str
    group_id: str
    iterations: int = 0
    meta: dict = field(default_factory=dict)


@dataclass
class TimeGains:
    """Time-dependent gains solved after the bandpass (`GainSolution`) is divided out: one
    complex gain per solution interval, antenna and polarization, averaged over the band; near
    1 on the group the bandpass was solved on (its mean gain is in the bandpass), phase 0 on
    the reference antenna. ``calmode`` "ap" (amplitude and phase) or "p" (phase only, |g| = 1).
    """

    antenna_numbers: np.ndarray  # (nant,) int
    time_jd: np.ndarray  # (nint,) interval centres, ascending
    gains: np.ndarray  # (nint, nant, npol) complex64
    flags: np.ndarray  # (nint, nant, npol) bool
    snr: np.ndarray  # (nint, nant, npol) float32
    refant: str
    calibrator: str
    group_id: str
    calmode: str = "ap"
    interval_s: float = 0.0
    iterations: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def mid_jd(self) -> float:
        return float(np.mean(self.time_jd))

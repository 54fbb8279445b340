"""What the instrument does to the sky: antenna gains and bandpasses, noise, RFI."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AntennaGains", "random_gains", "thermal_sigma_jy", "RfiTruth", "inject_rfi"]


@dataclass(frozen=True)
class AntennaGains:
    """``g[t, a, c, p] = bandpass[a, c, p] * gain[t, a, p]``."""

    bandpass: np.ndarray  # (nant, nchan, npol) complex128
    gain: np.ndarray  # (ntime, nant, npol) complex128

    def full(self) -> np.ndarray:
        """(ntime, nant, nchan, npol) complex128."""
        return self.bandpass[None, :, :, :] * self.gain[:, :, None, :]


def random_gains(*, rng: np.random.Generator, nant: int, freq_hz: np.ndarray, time_hours: np.ndarray,
                 amp_scatter: float, phase_scatter_deg: float, ripple: float,
                 phase_drift_deg_per_hour: float, npol: int = 2) -> AntennaGains:
    """Smooth random bandpasses (amplitude offset + ripple, phase offset + delay slope) and
    time-dependent phases drifting linearly at random rates up to ``phase_drift_deg_per_hour``.
    The same ``rng`` state gives the same bandpass for every group of a simulation."""
    f = (freq_hz - freq_hz.mean()) / max(np.ptp(freq_hz), 1.0)  # -0.5..0.5
    amp0 = 1.0 + amp_scatter * rng.standard_normal((nant, 1, npol))
    ph0 = np.radians(phase_scatter_deg) * rng.standard_normal((nant, 1, npol))
    delay = rng.uniform(-1.5, 1.5, (nant, 1, npol))  # radians of phase across the band
    period = rng.uniform(0.15, 0.4, (nant, 1, npol))
    rip_phase = rng.uniform(0, 2 * np.pi, (nant, 1, npol))
    amp = np.abs(amp0) * (1.0 + ripple * np.sin(2 * np.pi * f[None, :, None] / period + rip_phase))
    bandpass = amp * np.exp(1j * (ph0 + delay * f[None, :, None]))
    rates = np.radians(phase_drift_deg_per_hour) * rng.uniform(-1, 1, (1, nant, npol))
    gain = np.exp(1j * rates * time_hours[:, None, None])
    return AntennaGains(bandpass=bandpass, gain=gain)


def thermal_sigma_jy(*, sefd_jy: float, chan_width_hz: float, int_time_s: float) -> float:
    """Noise per real/imaginary part of one single-polarization cross-correlation,
    ``SEFD / sqrt(2 dnu tau)``."""
    return sefd_jy / np.sqrt(2.0 * abs(chan_width_hz) * int_time_s)


@dataclass(frozen=True)
class RfiTruth:
    mask: np.ndarray  # (ntime, nbl, nchan) bool: samples the RFI touched (both polarizations)
    events: list[dict]  # kind, where, amplitude in units of sigma


def inject_rfi(*, rng: np.random.Generator, vis: np.ndarray, cross: np.ndarray, sigma_jy: float) -> RfiTruth:
    """Add RFI in place to ``vis`` (ntime, nbl, nchan, npol) on cross-correlations ``cross``
    (nbl,) bool: one or two narrow-band persistent channels, one broadband burst, and
    single-baseline spikes. Amplitudes are 10-100 x the thermal sigma."""
    ntime, nbl, nchan, npol = vis.shape
    mask = np.zeros((ntime, nbl, nchan), bool)
    events: list[dict] = []
    xbl = np.flatnonzero(cross)

    def add(sel, amp_sigma: float) -> None:
        shape = vis[sel].shape
        phase = rng.uniform(0, 2 * np.pi, shape)
        vis[sel] += (amp_sigma * sigma_jy * np.exp(1j * phase)).astype(vis.dtype)

    for _ in range(rng.integers(1, 3)):  # narrow-band, persistent, all cross baselines
        c = int(rng.integers(0, nchan))
        a = float(rng.uniform(10, 30))
        add((slice(None), xbl, c, slice(None)), a)
        mask[:, xbl, c] = True
        events.append({"kind": "narrowband", "chan": c, "amp_sigma": a})
    t = int(rng.integers(0, ntime))  # broadband burst, one integration
    a = float(rng.uniform(10, 30))
    add((t, xbl, slice(None), slice(None)), a)
    mask[t, xbl, :] = True
    events.append({"kind": "burst", "time": t, "amp_sigma": a})
    n_spikes = 50
    ts = rng.integers(0, ntime, n_spikes)
    bs = xbl[rng.integers(0, xbl.size, n_spikes)]
    cs = rng.integers(0, nchan, n_spikes)
    amps = rng.uniform(20, 100, n_spikes)
    for ti, bi, ci, ai in zip(ts, bs, cs, amps):
        add((ti, bi, ci, slice(None)), float(ai))
        mask[ti, bi, ci] = True
    events.append({"kind": "spikes", "count": n_spikes})
    return RfiTruth(mask=mask, events=events)

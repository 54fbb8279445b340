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
    amp_sigma: np.ndarray  # (ntime, nbl, nchan) float32: the RFI amplitude in thermal sigmas, 0 = clean
    events: list[dict]  # kind, where, amplitude in units of sigma

    @property
    def mask(self) -> np.ndarray:
        """(ntime, nbl, nchan) bool: samples the RFI touched (both polarizations)."""
        return self.amp_sigma > 0


def inject_rfi(*, rng: np.random.Generator, vis: np.ndarray, cross: np.ndarray, sigma_jy: float,
               amp_sigma_range: tuple[float, float] = (5.0, 30.0), weak_amp_sigma: float = 1.5) -> RfiTruth:
    """Add RFI in place to ``vis`` (ntime, nbl, nchan, npol) on cross-correlations ``cross``
    (nbl,) bool. Amplitudes are in units of the thermal ``sigma_jy`` per real/imaginary part;
    each sample gets an independent random phase per polarization (both polarizations hit).

    - one or two narrow-band persistent channels on every cross baseline (one below 64 channels),
    - one broadband burst (one integration, every channel and cross baseline),
    - a slowly drifting carrier (one channel per integration, moving by ~nchan/8 over the group;
      groups of at least 8 integrations and 64 channels),
    - 60 single-baseline, single-sample spikes (amplitudes up to 2 x the range's top),
    each drawn uniformly from ``amp_sigma_range``; and one persistent channel at
    ``weak_amp_sigma`` on every cross baseline (below one baseline's noise; 0 = none).
    """
    ntime, nbl, nchan, npol = vis.shape
    amp_map = np.zeros((ntime, nbl, nchan), np.float32)
    events: list[dict] = []
    xbl = np.flatnonzero(cross)
    lo, hi = amp_sigma_range

    def add(t, b, c, amp_sigma: float) -> None:
        """RFI of amplitude ``amp_sigma`` at (t, b, c) (any index forms numpy accepts)."""
        shape = vis[t, b, c, :].shape
        phase = rng.uniform(0, 2 * np.pi, shape)
        vis[t, b, c, :] += (amp_sigma * sigma_jy * np.exp(1j * phase)).astype(vis.dtype)
        amp_map[t, b, c] = np.maximum(amp_map[t, b, c], amp_sigma)

    used = set()
    n_narrow = int(rng.integers(1, 3)) if nchan >= 64 else 1  # tiny test groups: less of the band lost
    for _ in range(n_narrow):  # narrow-band, persistent, all cross baselines
        c = int(rng.integers(0, nchan))
        used.add(c)
        a = float(rng.uniform(lo, hi))
        add(slice(None), xbl, c, a)
        events.append({"kind": "narrowband", "chan": c, "amp_sigma": a})
    t = int(rng.integers(0, ntime))  # broadband burst, one integration
    a = float(rng.uniform(lo, hi))
    add(t, xbl, slice(None), a)
    events.append({"kind": "burst", "time": t, "amp_sigma": a})
    if ntime >= 8 and nchan >= 64:  # a carrier drifting across ~nchan/8 channels
        c0 = int(rng.integers(0, nchan - nchan // 8))
        a = float(rng.uniform(lo, hi))
        chans = np.rint(c0 + np.linspace(0, nchan // 8, ntime)).astype(int)
        for ti, ci in enumerate(chans):
            add(ti, xbl, int(ci), a)
        events.append({"kind": "drifting", "chan_start": int(chans[0]), "chan_end": int(chans[-1]), "amp_sigma": a})
    n_spikes = 60
    ts = rng.integers(0, ntime, n_spikes)
    bs = xbl[rng.integers(0, xbl.size, n_spikes)]
    cs = rng.integers(0, nchan, n_spikes)
    amps = rng.uniform(lo, 2 * hi, n_spikes)
    for ti, bi, ci, ai in zip(ts, bs, cs, amps):
        add(int(ti), int(bi), int(ci), float(ai))
    events.append({"kind": "spikes", "count": n_spikes, "amp_sigma_min": float(amps.min())})
    if weak_amp_sigma > 0 and nchan > len(used) + 1:  # persistent, below one baseline's noise
        c = int(rng.choice([k for k in range(nchan) if k not in used]))
        add(slice(None), xbl, c, float(weak_amp_sigma))
        events.append({"kind": "weak_narrowband", "chan": c, "amp_sigma": float(weak_amp_sigma)})
    return RfiTruth(amp_sigma=amp_map, events=events)

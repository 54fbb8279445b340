"""Diagnostic PNGs per group (matplotlib's object API on the Agg canvas: no pyplot state, safe
in worker threads). Each function writes one file by a rename and returns its path.

matplotlib is imported here, with the module, and the pipeline imports this module with its
own: importing ``matplotlib.figure`` for the first time leaves a reference cycle through the
importing call's frames, and a stage that did it lazily kept its group's visibilities and images
alive until the cyclic garbage collector next ran (tests/test_service.py)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from matplotlib import rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

__all__ = ["figure", "bandpass_png", "flags_png", "uv_coverage_png", "gain_phase_png"]


def figure(figsize, dpi: int = 90) -> Figure:
    """An empty figure on its own Agg canvas."""
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def bandpass_png(path: Path, *, gains: np.ndarray, flags: np.ndarray, freq_hz: np.ndarray,
                 antenna_numbers: np.ndarray, title: str) -> Path:
    """Amplitude and phase of every antenna's solution against frequency, one panel pair per
    polarization; the median over antennas in black. gains/flags: (nant, nchan, npol).

    The antennas' curves are one LineCollection per panel (not a Line2D each) and the margins
    fixed (not tight_layout, which draws the figure once more to measure it): 0.7 s became
    0.3 s for 96 antennas × 768 channels."""
    nant, nchan, npol = gains.shape
    fig = figure((10, 5.5))
    axes = fig.subplots(2, npol, sharex=True, squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.1, top=0.87, hspace=0.28, wspace=0.16)
    f_mhz = np.asarray(freq_hz, np.float64) / 1e6
    g = np.where(flags, np.nan, gains)
    colors = [c["color"] for c in rcParams["axes.prop_cycle"]]
    colors = [colors[a % len(colors)] for a in range(nant)]
    for p in range(npol):
        amp, ph = np.abs(g[:, :, p]), np.degrees(np.angle(g[:, :, p]))
        for ax, y in ((axes[0, p], amp), (axes[1, p], ph)):
            segs = np.stack([np.broadcast_to(f_mhz, y.shape), y], axis=-1)  # (nant, nchan, 2); NaN: a gap
            ax.add_collection(LineCollection(segs, colors=colors, linewidths=0.5, alpha=0.5))
            finite = y[np.isfinite(y)]
            if finite.size:
                lo, hi = float(finite.min()), float(finite.max())
                pad = 0.05 * (hi - lo) if hi > lo else 0.5
                ax.set_ylim(lo - pad, hi + pad)
        with np.errstate(all="ignore"):
            with warnings.catch_warnings():  # a channel flagged on every antenna: NaN, a gap in the line
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.nanmedian(amp, axis=0)
            axes[0, p].plot(f_mhz, median, "k", lw=1.2)
        axes[0, p].set_title(f"pol {p}: amplitude")
        axes[1, p].set_title(f"pol {p}: phase (deg)")
        axes[1, p].set_xlabel("frequency (MHz)")
        axes[1, p].set_ylim(-180, 180)
        axes[1, p].set_xlim(f_mhz.min(), f_mhz.max())
    fig.suptitle(f"{title}  ({nant} antennas)")
    return _save(fig, path)


def flags_png(path: Path, *, per_time_channel: np.ndarray, per_antenna: np.ndarray, freq_hz: np.ndarray,
              title: str) -> Path:
    """The flagged fraction as a time × frequency heat map and per antenna.
    per_time_channel: (ntime, nchan); per_antenna: (nant_telescope,), NaN for absent antennas."""
    fig = figure((10, 4.5))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    f_mhz = np.asarray(freq_hz) / 1e6
    im = ax1.imshow(per_time_channel, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="magma",
                    extent=(f_mhz[0], f_mhz[-1], 0, per_time_channel.shape[0]), interpolation="nearest")
    ax1.set_xlabel("frequency (MHz)")
    ax1.set_ylabel("integration")
    ax1.set_title("flagged fraction")
    fig.colorbar(im, ax=ax1)
    present = np.flatnonzero(np.isfinite(per_antenna))
    ax2.bar(present, per_antenna[present], width=1.0)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("antenna number")
    ax2.set_title("flagged fraction per antenna")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def uv_coverage_png(path: Path, *, uvw_m: np.ndarray, freq_hz: np.ndarray, title: str,
                    max_points: int = 50000) -> Path:
    """The (u, v) tracks in kλ at the band centre (both signs). uvw_m: (ntime, nbl, 3)."""
    uv = uvw_m[..., :2].reshape(-1, 2)
    step = max(1, uv.shape[0] // max_points)
    uv = uv[::step] * float(np.mean(freq_hz)) / 299792458.0 / 1e3
    fig = figure((5, 5))
    ax = fig.add_subplot()
    ax.plot(uv[:, 0], uv[:, 1], ",", color="C0")
    ax.plot(-uv[:, 0], -uv[:, 1], ",", color="C0")
    ax.set_aspect("equal")
    ax.set_xlabel("u (kλ)")
    ax.set_ylabel("v (kλ)")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def gain_phase_png(path: Path, *, time_mjd: np.ndarray, phase_deg: np.ndarray, title: str) -> Path:
    """Each antenna's gain phase (band median, first polarization, relative to the reference
    antenna) against the time of the solutions. time_mjd: (nsol,); phase_deg: (nsol, nant)."""
    fig = figure((8, 4))
    ax = fig.add_subplot()
    hours = (np.asarray(time_mjd) - time_mjd[0]) * 24.0
    for a in range(phase_deg.shape[1]):
        ax.plot(hours, phase_deg[:, a], "o-", ms=3, lw=0.6, alpha=0.6)
    ax.set_xlabel(f"hours since MJD {time_mjd[0]:.4f}")
    ax.set_ylabel("gain phase (deg)")
    ax.set_ylim(-180, 180)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)

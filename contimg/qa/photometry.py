"""Forced photometry at catalogue positions, variability statistics, and light curves.

The flux of a point source at a known position is the amplitude of the restoring beam centred
there, fitted to the restored image by linear least squares over the beam's core (B ≥ 0.5),
divided by the averaged primary beam at that position. Its error is the local robust RMS of the
residual over the primary beam, with a fractional systematic term added in quadrature.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from astropy.wcs import WCS

from contimg.imaging.restore import FWHM_PER_SIGMA, elliptical_gaussian
from contimg.qa.plots import figure
from contimg.qa.sources import catalogue_in_field
from contimg.sky.skymodel import PointSources

__all__ = ["forced_amplitude", "forced_photometry", "forced_at", "variability", "variability_candidate",
           "transient_rise", "write_lightcurve"]


def forced_amplitude(*, image: np.ndarray, x: float, y: float, beam_rad: tuple[float, float, float],
                     cell_rad: float) -> float:
    """Amplitude (image units) of the restoring beam centred at pixel (x, y), fitted to ``image``
    (ny, nx) over the pixels where the beam is ≥ 0.5; NaN near the edge or on NaN pixels."""
    smaj = beam_rad[0] / FWHM_PER_SIGMA / cell_rad
    smin = beam_rad[1] / FWHM_PER_SIGMA / cell_rad
    hb = int(np.ceil(1.5 * smaj)) + 1
    ix, iy = int(round(x)), int(round(y))
    ny, nx = image.shape
    if not (hb <= ix < nx - hb and hb <= iy < ny - hb):
        return float("nan")
    yy, xx = np.mgrid[iy - hb:iy + hb + 1, ix - hb:ix + hb + 1]
    beam = elliptical_gaussian(-(xx - x), yy - y, smaj, smin, beam_rad[2])
    core = beam >= 0.5
    box = image[iy - hb:iy + hb + 1, ix - hb:ix + hb + 1].astype(np.float64)
    if not np.all(np.isfinite(box[core])):
        return float("nan")
    return float(np.sum(box[core] * beam[core]) / np.sum(beam[core] ** 2))


def forced_photometry(*, restored: np.ndarray, rms: np.ndarray, pb: np.ndarray, wcs: WCS,
                      beam_rad: tuple[float, float, float], cell_rad: float, catalogue: PointSources,
                      freq_hz: float, min_pb: float, min_flux_jy: float, systematic_fraction: float) -> list[dict]:
    """One measurement per catalogue source in the field (averaged beam ≥ ``min_pb``, catalogue
    flux at ``freq_hz`` ≥ ``min_flux_jy``): ``source``, ``ra_deg``, ``dec_deg``, ``x``, ``y``,
    ``pb``, ``flux_jy`` (primary-beam corrected), ``noise_jy`` (local RMS / pb), ``err_jy``
    (noise and ``systematic_fraction`` × |flux| in quadrature), ``catalogue_flux_jy``.

    Images (ny, nx): restored (Jy/beam), rms (local residual RMS), pb (averaged primary beam)."""
    field = catalogue_in_field(catalogue=catalogue, wcs=wcs, pb=pb, min_pb=min_pb, freq_hz=freq_hz)
    rows = []
    for k, i in enumerate(field["index"]):
        if field["flux_jy"][k] < min_flux_jy:
            continue
        x, y, pb_k = float(field["x"][k]), float(field["y"][k]), float(field["pb"][k])
        amp = forced_amplitude(image=restored, x=x, y=y, beam_rad=beam_rad, cell_rad=cell_rad)
        local = float(rms[int(round(y)), int(round(x))])
        if not (np.isfinite(amp) and np.isfinite(local)):
            continue
        flux, noise = amp / pb_k, local / pb_k
        rows.append({"source": str(catalogue.name[i]), "ra_deg": float(np.degrees(catalogue.ra_rad[i])),
                     "dec_deg": float(np.degrees(catalogue.dec_rad[i])), "x": x, "y": y, "pb": pb_k,
                     "flux_jy": flux, "noise_jy": noise,
                     "err_jy": float(np.hypot(noise, systematic_fraction * abs(flux))),
                     "catalogue_flux_jy": float(field["flux_jy"][k])})
    return rows


def forced_at(*, restored: np.ndarray, rms: np.ndarray, pb: np.ndarray, wcs: WCS,
              beam_rad: tuple[float, float, float], cell_rad: float, ra_deg: np.ndarray, dec_deg: np.ndarray,
              min_pb: float, systematic_fraction: float) -> list[dict]:
    """Forced photometry at positions (``ra_deg``, ``dec_deg`` (n,)): `forced_photometry`'s
    measurement for each position inside the image where ``pb`` ≥ ``min_pb``: ``index`` (into
    the positions), ``x``, ``y``, ``pb``, ``flux_jy``, ``noise_jy``, ``err_jy``. For a mosaic
    (already primary-beam corrected) pass its noise map as ``rms`` and a ``pb`` of 1 where its
    primary-beam weight reaches the cutoff, 0 elsewhere."""
    ra_deg, dec_deg = np.atleast_1d(ra_deg), np.atleast_1d(dec_deg)
    if ra_deg.size == 0:
        return []
    x, y = wcs.world_to_pixel_values(ra_deg, dec_deg)
    x, y = np.asarray(x, float), np.asarray(y, float)
    ny, nx = restored.shape
    rows = []
    for i in range(ra_deg.size):
        ix, iy = int(round(x[i])), int(round(y[i]))
        if not (0 <= ix < nx and 0 <= iy < ny):
            continue
        pb_i = float(pb[iy, ix])
        if not (np.isfinite(pb_i) and pb_i >= min_pb):
            continue
        amp = forced_amplitude(image=restored, x=float(x[i]), y=float(y[i]), beam_rad=beam_rad, cell_rad=cell_rad)
        local = float(rms[iy, ix])
        if not (np.isfinite(amp) and np.isfinite(local)):
            continue
        flux, noise = amp / pb_i, local / pb_i
        rows.append({"index": i, "x": float(x[i]), "y": float(y[i]), "pb": pb_i, "flux_jy": flux,
                     "noise_jy": noise, "err_jy": float(np.hypot(noise, systematic_fraction * abs(flux)))})
    return rows


def variability_candidate(stats: dict, *, eta_threshold: float, v_threshold: float, min_points: int) -> bool:
    """Whether a light curve's `variability` statistics make it a candidate: at least
    ``min_points`` measurements, eta above ``eta_threshold`` and |V| above ``v_threshold``."""
    return bool(stats["n"] >= min_points and np.isfinite(stats["eta"]) and stats["eta"] > eta_threshold
                and abs(stats["v"]) > v_threshold)


def transient_rise(*, flux_jy: float, err_jy: float, prior_flux_jy: np.ndarray, prior_err_jy: np.ndarray) -> float:
    """How far (in combined sigmas) a new detection's flux rises above the forced flux at its
    position in each earlier image of the same sky: the smallest
    (flux - prior) / sqrt(err² + prior_err²); NaN when there is no earlier measurement (new sky
    says nothing about a source being new)."""
    prior = np.asarray(prior_flux_jy, float)
    if prior.size == 0:
        return float("nan")
    return float(np.min((flux_jy - prior) / np.hypot(err_jy, np.asarray(prior_err_jy, float))))


def variability(*, flux_jy: np.ndarray, err_jy: np.ndarray) -> dict:
    """The variability statistics of one light curve (Swinbank et al. 2015, as in the LOFAR
    Transients Pipeline): ``eta``, the weighted reduced χ² about the weighted mean, and ``v``,
    the modulation index (sample standard deviation / mean); plus ``n`` and ``mean_flux_jy``.

    flux_jy, err_jy: (n,) measurements and their 1σ errors; NaN statistics for n < 2."""
    s = np.asarray(flux_jy, float)
    e = np.asarray(err_jy, float)
    n = s.size
    if n < 2:
        return {"n": n, "mean_flux_jy": float(s.mean()) if n else float("nan"), "eta": float("nan"),
                "v": float("nan")}
    w = 1.0 / e**2
    eta = n / (n - 1) * (np.mean(w * s**2) - np.mean(w * s) ** 2 / np.mean(w))
    v = np.std(s, ddof=1) / np.mean(s) if np.mean(s) != 0 else float("inf")
    return {"n": n, "mean_flux_jy": float(np.mean(s)), "eta": float(eta), "v": float(v)}


def write_lightcurve(rows: list[dict], *, csv_path: Path, png_path: Path | None, title: str) -> list[Path]:
    """A light curve (rows with ``mid_mjd``, ``flux_jy``, ``err_jy``, ``group_id``...) as CSV
    and, with ``png_path``, a plot (matplotlib, Agg). Each file is written by a rename."""
    written = []
    csv_path = Path(csv_path)
    keys = list(rows[0]) if rows else ["group_id", "mid_mjd", "flux_jy", "err_jy"]
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=keys)
        out.writeheader()
        out.writerows(rows)
    os.replace(tmp, csv_path)
    written.append(csv_path)
    if png_path is not None:
        fig = figure((7, 3.5), dpi=100)
        ax = fig.add_subplot()
        if rows:
            t = np.array([r["mid_mjd"] for r in rows])
            ax.errorbar((t - t[0]) * 24.0, [r["flux_jy"] * 1e3 for r in rows],
                        yerr=[r["err_jy"] * 1e3 for r in rows], fmt="o", ms=4, capsize=2)
            ax.set_xlabel(f"hours since MJD {t[0]:.5f}")
        ax.set_ylabel("flux density (mJy)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        png_path = Path(png_path)
        tmp = png_path.with_name(png_path.name + ".tmp")
        fig.savefig(tmp, format="png")
        os.replace(tmp, png_path)
        written.append(png_path)
    return written

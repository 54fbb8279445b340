"""Compare a group's primary-beam-corrected image with the simulator's truth file.

For every truth source inside the image whose apparent flux (truth flux at the image frequency
times the averaged primary beam) is above ``min_snr`` times the residual's robust RMS, fit a
beam-shaped Gaussian (free amplitude and position) in the pbcor image, starting at the truth
position converted with astropy's WCS of the FITS header.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS

from contimg.imaging.measure import fit_point_source

__all__ = ["measure_truth_sources"]


def measure_truth_sources(*, products_dir: Path, group_id: str, truth_path: Path, min_snr: float = 10.0,
                          edge_px: int = 20) -> tuple[list[dict], float]:
    """One dict per source checked (name, flux_jy, measured_jy, ratio, offset_beam, snr, pb), and the
    residual's robust RMS (Jy/beam)."""
    stem = Path(products_dir) / f"{group_id}"
    with fits.open(f"{stem}.pbcor.fits") as h:
        pbcor, header = h[0].data[0, 0], h[0].header
    residual = fits.getdata(f"{stem}.residual.fits")[0, 0]
    restored = fits.getdata(f"{stem}.restored.fits")[0, 0]
    pb = np.where(np.isfinite(pbcor) & (pbcor != 0), restored / np.where(pbcor != 0, pbcor, 1), np.nan)
    sigma = float(mad_std(residual))
    wcs = WCS(header).celestial
    beam = tuple(np.radians(header[k]) for k in ("BMAJ", "BMIN", "BPA"))
    cell = np.radians(abs(header["CDELT1"]))
    beam_size = np.sqrt(beam[0] * beam[1])
    with h5py.File(truth_path) as f:
        s = f["sources"]
        src = {k: s[k][()] for k in ("ra_rad", "dec_rad", "flux_jy", "spectral_index", "name")}
        ref = float(s.attrs["ref_freq_hz"])
    out = []
    for i in range(src["ra_rad"].size):
        x, y = (float(v) for v in wcs.world_to_pixel_values(np.degrees(src["ra_rad"][i]),
                                                             np.degrees(src["dec_rad"][i])))
        if not (edge_px <= x < pbcor.shape[1] - edge_px and edge_px <= y < pbcor.shape[0] - edge_px):
            continue
        att = pb[int(round(y)), int(round(x))]
        flux = float(src["flux_jy"][i] * (header["CRVAL3"] / ref) ** src["spectral_index"][i])
        if not np.isfinite(att) or flux * att < min_snr * sigma:
            continue
        fit = fit_point_source(image=pbcor, x0=x, y0=y, beam_rad=beam, cell_rad=cell)
        out.append({"name": src["name"][i].decode(), "flux_jy": flux, "measured_jy": fit.flux,
                    "ratio": fit.flux / flux, "offset_beam": float(np.hypot(fit.x - x, fit.y - y) * cell / beam_size),
                    "snr": float(flux * att / sigma), "pb": float(att)})
    return out, sigma


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="compare a run's pbcor images with truth.h5")
    ap.add_argument("root", type=Path)
    ap.add_argument("truth", type=Path)
    args = ap.parse_args(argv)
    for folder in sorted((args.root / "products").iterdir()):
        rows, sigma = measure_truth_sources(products_dir=folder, group_id=folder.name, truth_path=args.truth)
        n5 = sum(abs(r["ratio"] - 1) < 0.05 and r["offset_beam"] < 0.2 for r in rows)
        worst = max((abs(r["ratio"] - 1) for r in rows), default=float("nan"))
        off = max((r["offset_beam"] for r in rows), default=float("nan"))
        print(f"{folder.name}: rms {sigma * 1e3:.3f} mJy/beam, {len(rows)} sources > 10 sigma, {n5} within 5 % "
              f"and 0.2 beam; worst flux error {worst:.1%}, worst offset {off:.3f} beam")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Source finding in a restored image and cross-match with the sky catalogue.

Pixels follow the FITS order of the images (row = y to the north, column = x to the west);
pixel ↔ sky goes through astropy's WCS of the image's own FITS header, so positions here are
independent of the imager's projection code.
"""

from __future__ import annotations

import numba
import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from scipy import ndimage
from scipy.optimize import least_squares

from contimg.io.fits import image_header
from contimg.imaging.measure import fit_point_source
from contimg.imaging.restore import FWHM_PER_SIGMA, elliptical_gaussian
from contimg.sky.skymodel import PointSources

__all__ = ["image_wcs", "rms_map", "sample", "island_peaks", "find_islands", "measure_islands", "find_sources",
           "fit_shape", "associate", "refine_position", "catalogue_in_field", "crossmatch"]


def image_wcs(*, npix: int, cell_rad: float, ra_rad: float, dec_rad: float) -> WCS:
    """The celestial WCS of an (npix, npix) contimg image (the header its FITS files carry)."""
    header = image_header(npix=npix, cell_rad=cell_rad, ra_rad=ra_rad, dec_rad=dec_rad, freq_hz=1.4e9,
                          bandwidth_hz=1.0, time_start_jd=2451545.0, time_mid_jd=2451545.0, bunit="Jy/beam",
                          beam_rad=None)
    return WCS(header).celestial


@numba.njit(parallel=True, nogil=True, cache=True)
def _tile_mad_std(residual, tile, out):
    ty, tx = out.shape
    for t in numba.prange(ty * tx):
        i, j = t // tx, t % tx
        block = residual[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile].ravel()
        block = block[np.isfinite(block)].astype(np.float64)
        if block.size:
            out[i, j] = 1.482602218505602 * np.median(np.abs(block - np.median(block)))


def rms_map(*, residual: np.ndarray, tile: int) -> np.ndarray:
    """Local robust RMS of ``residual`` (ny, nx) in square tiles of ``tile`` pixels (the median
    absolute deviation times 1.4826, astropy's `mad_std`, tiles in parallel), spread back to
    (ny, nx) float32; NaN where a tile has no finite pixel."""
    ny, nx = residual.shape
    ty, tx = -(-ny // tile), -(-nx // tile)
    out = np.full((ty, tx), np.nan, np.float64)
    native = residual.dtype in (np.dtype(np.float32), np.dtype(np.float64))  # else (FITS: big-endian) a copy
    _tile_mad_std(residual if native else np.asarray(residual, np.float64), tile, out)
    return np.repeat(np.repeat(out.astype(np.float32), tile, axis=0), tile, axis=1)[:ny, :nx]


def sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear values (float64) of ``image`` (ny, nx) at pixels (x, y); NaN outside. A float32
    image is read as it is (order 1 needs no spline prefilter): no float64 copy of a 4096² image
    for a few dozen points."""
    native = image.dtype in (np.dtype(np.float32), np.dtype(np.float64))  # else (FITS: big-endian) a copy
    return ndimage.map_coordinates(image if native else np.asarray(image, np.float64),
                                   [np.atleast_1d(y), np.atleast_1d(x)], order=1, mode="constant", cval=np.nan,
                                   output=np.float64)


@numba.njit(cache=True, nogil=True)
def _island_peaks_kernel(image, labels, peaks, ys, xs):
    ny, nx = image.shape
    for y in range(ny):
        for x in range(nx):
            k = labels[y, x] - 1
            if k >= 0 and (ys[k] < 0 or image[y, x] > peaks[k]):
                peaks[k] = image[y, x]
                ys[k] = y
                xs[k] = x


def island_peaks(image: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each island's peak value and its (first, in C order) pixel: ``ndimage.maximum`` and
    ``maximum_position`` of ``image`` (ny, nx) over ``labels`` 1 … n in one pass (scipy sorts
    the labels: seconds for a 4096² image). Returns peaks (n,) float64, ys, xs (n,) int64."""
    peaks = np.zeros(n, np.float64)
    ys = np.full(n, -1, np.int64)
    xs = np.full(n, -1, np.int64)
    _island_peaks_kernel(image, labels, peaks, ys, xs)
    return peaks, ys, xs


def find_islands(*, restored: np.ndarray, rms: np.ndarray, pb: np.ndarray, threshold_sigma: float,
                 min_pb: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Islands of ``restored`` above ``threshold_sigma`` × the local ``rms`` where ``pb`` ≥
    ``min_pb`` (all (ny, nx)): each island's brightest pixel's value (n,) float64 and its pixel
    ``ys``, ``xs`` (n,) int64, brightest first."""
    with np.errstate(invalid="ignore"):
        mask = (restored > threshold_sigma * rms) & (pb >= min_pb) & np.isfinite(rms)
    labels, n = ndimage.label(mask)
    del mask
    if n == 0:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    peaks, where_y, where_x = island_peaks(restored, labels, n)
    order = np.argsort(-peaks)
    return peaks[order], where_y[order], where_x[order]


def measure_islands(*, restored: np.ndarray, rms: np.ndarray, pb: np.ndarray, wcs: WCS,
                    beam_rad: tuple[float, float, float], cell_rad: float, peaks: np.ndarray, ys: np.ndarray,
                    xs: np.ndarray) -> dict[str, np.ndarray]:
    """`find_sources`'s measurement of the islands whose brightest pixels are (``ys``, ``xs``)
    with values ``peaks`` (n,): a Gaussian of the restoring beam's shape fitted at each (free
    amplitude and position; the pixel itself where the fit fails or moves more than 2 pixels).
    ``rms_jy`` is ``rms`` at the island's brightest pixel, where it is finite (`find_islands`):
    the fitted position may lie where it is not (a mosaic's edge); ``pb`` there too where it is
    0 at the fitted position."""
    keys = ("x", "y", "ra_deg", "dec_deg", "peak_jy", "flux_jy", "rms_jy", "snr", "pb")
    if len(peaks) == 0:
        return {k: np.zeros(0) for k in keys}
    rows = []
    for iy, ix, peak in zip(ys.tolist(), xs.tolist(), peaks.tolist()):
        fit = fit_point_source(image=restored, x0=float(ix), y0=float(iy), beam_rad=beam_rad, cell_rad=cell_rad)
        x, y, amp = (fit.x, fit.y, fit.flux) if fit.ok and np.hypot(fit.x - ix, fit.y - iy) < 2.0 else \
            (float(ix), float(iy), float(peak))
        rows.append((x, y, amp))
    x, y, amp = (np.array(c) for c in zip(*rows))
    ra, dec = wcs.pixel_to_world_values(x, y)
    local_rms = rms[np.asarray(ys, np.int64), np.asarray(xs, np.int64)].astype(np.float64)
    pb_at = sample(pb, x, y)
    pb_at = np.where(pb_at > 0, pb_at, pb[np.asarray(ys, np.int64), np.asarray(xs, np.int64)])  # (as rms_jy)
    return {"x": x, "y": y, "ra_deg": np.asarray(ra) % 360.0, "dec_deg": np.asarray(dec), "peak_jy": amp,
            "flux_jy": amp / pb_at, "rms_jy": local_rms, "snr": amp / local_rms, "pb": pb_at}


def find_sources(*, restored: np.ndarray, rms: np.ndarray, pb: np.ndarray, wcs: WCS,
                 beam_rad: tuple[float, float, float], cell_rad: float, threshold_sigma: float, min_pb: float,
                 max_sources: int) -> dict[str, np.ndarray]:
    """Compact sources: islands of ``restored`` above ``threshold_sigma`` × the local ``rms``
    where the averaged beam ``pb`` ≥ ``min_pb`` (`find_islands`); each island's peak is fitted
    with a Gaussian of the restoring beam's shape (free amplitude and position:
    `measure_islands`).

    All images (ny, nx). Returns arrays (n,): ``x``, ``y`` (pixels), ``ra_deg``, ``dec_deg``,
    ``peak_jy`` (apparent, Jy/beam), ``flux_jy`` (primary-beam corrected), ``rms_jy`` (local,
    apparent), ``snr``, ``pb``; brightest island first, at most ``max_sources``."""
    peaks, ys, xs = find_islands(restored=restored, rms=rms, pb=pb, threshold_sigma=threshold_sigma, min_pb=min_pb)
    return measure_islands(restored=restored, rms=rms, pb=pb, wcs=wcs, beam_rad=beam_rad, cell_rad=cell_rad,
                           peaks=peaks[:max_sources], ys=ys[:max_sources], xs=xs[:max_sources])


def fit_shape(*, image: np.ndarray, x: float, y: float, beam_rad: tuple[float, float, float],
              cell_rad: float) -> tuple[float, float, float]:
    """The FWHM major and minor axes (radians) and position angle (radians, east of north) of
    an elliptical Gaussian with free amplitude, centre, axes and angle fitted to ``image``
    (ny, nx) around pixel (x, y), over a box of twice the beam's major axis, started at the
    restoring beam; NaNs when it cannot be fitted (edge, NaN pixels)."""
    smaj, smin = beam_rad[0] / FWHM_PER_SIGMA / cell_rad, beam_rad[1] / FWHM_PER_SIGMA / cell_rad
    hb = max(3, int(np.ceil(2.0 * smaj)))
    ix, iy = int(round(x)), int(round(y))
    ny, nx = image.shape
    nan = (float("nan"),) * 3
    if not (hb <= ix < nx - hb and hb <= iy < ny - hb):
        return nan
    box = image[iy - hb:iy + hb + 1, ix - hb:ix + hb + 1].astype(np.float64)
    if not np.all(np.isfinite(box)):
        return nan
    yy, xx = np.mgrid[iy - hb:iy + hb + 1, ix - hb:ix + hb + 1]

    def resid(p):
        amp, x0, y0, sa, sb, pa = p
        return (amp * elliptical_gaussian(-(xx - x0), yy - y0, sa, sb, pa) - box).ravel()

    start = [float(image[iy, ix]), x, y, smaj, smin, beam_rad[2]]
    lo = [-np.inf, x - hb, y - hb, 0.3 * smin, 0.3 * smin, -np.inf]
    hi = [np.inf, x + hb, y + hb, 4 * smaj + 1, 4 * smaj + 1, np.inf]
    fit = least_squares(resid, start, bounds=(lo, hi))
    if not fit.success:
        return nan
    _, _, _, sa, sb, pa = fit.x
    if sb > sa:
        sa, sb, pa = sb, sa, pa + np.pi / 2
    pa = (pa + np.pi / 2) % np.pi - np.pi / 2
    return float(sa * FWHM_PER_SIGMA * cell_rad), float(sb * FWHM_PER_SIGMA * cell_rad), float(pa)


def associate(*, cat_ra_deg: np.ndarray, cat_dec_deg: np.ndarray, ra_deg: np.ndarray, dec_deg: np.ndarray,
              radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """For each detection (``ra_deg``, ``dec_deg`` (n,)), the index of the nearest catalogue
    source (``cat_ra_deg``, ``cat_dec_deg`` (m,)) within ``radius_arcsec`` (-1: none) and the
    separation (arcsec). When two detections take one source, the nearer keeps it."""
    n = np.asarray(ra_deg).size
    if n == 0 or np.asarray(cat_ra_deg).size == 0:
        return np.full(n, -1), np.full(n, np.inf)
    det = SkyCoord(ra=np.asarray(ra_deg) * u.deg, dec=np.asarray(dec_deg) * u.deg)
    cat = SkyCoord(ra=np.asarray(cat_ra_deg) * u.deg, dec=np.asarray(cat_dec_deg) * u.deg)
    idx, sep, _ = det.match_to_catalog_sky(cat)
    sep = sep.to_value(u.arcsec)
    idx = np.where(sep <= radius_arcsec, idx, -1)
    for k in np.unique(idx[idx >= 0]):
        takers = np.flatnonzero(idx == k)
        if takers.size > 1:
            idx[takers[takers != takers[np.argmin(sep[takers])]]] = -1
    return idx, sep


def refine_position(*, sum_vec: np.ndarray, weight: float, ra_deg: float, dec_deg: float,
                    sigma_arcsec: float) -> tuple[np.ndarray, float, float, float, float]:
    """Add one detection at (``ra_deg``, ``dec_deg``) with positional error ``sigma_arcsec``
    to a source's weighted sum of unit vectors ``sum_vec`` (3,) and weight (sum of 1/sigma²,
    arcsec⁻²). Returns the new (sum_vec, weight, ra_deg, dec_deg, error_arcsec): the
    inverse-variance weighted mean direction and its error 1/sqrt(weight)."""
    w = 1.0 / sigma_arcsec**2
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    vec = np.asarray(sum_vec, float) + w * np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    weight = weight + w
    unit = vec / np.linalg.norm(vec)
    return (vec, float(weight), float(np.degrees(np.arctan2(unit[1], unit[0])) % 360.0),
            float(np.degrees(np.arcsin(np.clip(unit[2], -1, 1)))), float(1.0 / np.sqrt(weight)))


def catalogue_in_field(*, catalogue: PointSources, wcs: WCS, pb: np.ndarray, min_pb: float,
                       freq_hz: float) -> dict[str, np.ndarray]:
    """The catalogue sources inside the image where ``pb`` ≥ ``min_pb``: ``index`` into the
    catalogue, pixels ``x``, ``y``, ``pb`` there and the catalogue flux at ``freq_hz``."""
    x, y = wcs.world_to_pixel_values(np.degrees(catalogue.ra_rad), np.degrees(catalogue.dec_rad))
    x, y = np.asarray(x, float), np.asarray(y, float)
    pb_at = sample(pb, x, y)
    with np.errstate(invalid="ignore"):
        inside = np.isfinite(pb_at) & (pb_at >= min_pb)
    idx = np.flatnonzero(inside)
    flux = catalogue.flux_at(np.array([freq_hz]))[idx, 0] if idx.size else np.zeros(0)
    return {"index": idx, "x": x[idx], "y": y[idx], "pb": pb_at[idx], "flux_jy": flux}


def crossmatch(*, found: dict[str, np.ndarray], catalogue: PointSources, field: dict[str, np.ndarray],
               rms: np.ndarray, beam_rad: tuple[float, float, float], threshold_sigma: float,
               match_radius_beam: float, min_match_snr: float) -> tuple[dict, list[dict]]:
    """Match each catalogue source in the field (`catalogue_in_field`) with its nearest found
    source within ``match_radius_beam`` × BMAJ.

    Returns (summary, matches). The summary: ``n_found``, ``n_catalogue_in_field``,
    ``n_catalogue_detectable`` (apparent catalogue flux above the detection threshold),
    ``n_matched``, ``n_used`` (matches with SNR ≥ ``min_match_snr``, which the rest uses),
    ``median_offset_arcsec`` / ``median_offset_beam`` (median separation), the vector median
    ``systematic_offset_arcsec`` [east, north] and ``systematic_offset_beam``, and the median
    ``flux_ratio`` (found, primary-beam corrected / catalogue); None where nothing is used.
    Each match names its catalogue ``source`` and its ``detection`` (index into ``found``).
    The beam unit is the geometric mean of BMAJ and BMIN."""
    beam_arcsec = float(np.degrees(np.sqrt(beam_rad[0] * beam_rad[1])) * 3600)
    ix, iy = np.round(field["x"]).astype(int), np.round(field["y"]).astype(int)
    local = rms[np.clip(iy, 0, rms.shape[0] - 1), np.clip(ix, 0, rms.shape[1] - 1)]
    with np.errstate(invalid="ignore"):
        detectable = field["flux_jy"] * field["pb"] > threshold_sigma * local
    summary = {"n_found": int(found["x"].size), "n_catalogue_in_field": int(field["index"].size),
               "n_catalogue_detectable": int(np.sum(detectable)), "n_matched": 0, "n_used": 0,
               "median_offset_arcsec": None, "median_offset_beam": None, "systematic_offset_arcsec": None,
               "systematic_offset_beam": None, "flux_ratio": None}
    matches: list[dict] = []
    if not field["index"].size or not found["x"].size:
        return summary, matches
    cat = SkyCoord(ra=catalogue.ra_rad[field["index"]] * u.rad, dec=catalogue.dec_rad[field["index"]] * u.rad)
    det = SkyCoord(ra=found["ra_deg"] * u.deg, dec=found["dec_deg"] * u.deg)
    nearest, sep, _ = cat.match_to_catalog_sky(det)
    radius = match_radius_beam * np.degrees(beam_rad[0]) * 3600
    for k in np.flatnonzero(sep.to_value(u.arcsec) <= radius):
        j = int(nearest[k])
        east, north = cat[k].spherical_offsets_to(det[j])
        matches.append({"source": str(catalogue.name[field["index"][k]]), "detection": j, "ra_deg": float(found["ra_deg"][j]),
                        "dec_deg": float(found["dec_deg"][j]), "sep_arcsec": float(sep[k].to_value(u.arcsec)),
                        "east_arcsec": float(east.to_value(u.arcsec)), "north_arcsec": float(north.to_value(u.arcsec)),
                        "flux_jy": float(found["flux_jy"][j]), "catalogue_flux_jy": float(field["flux_jy"][k]),
                        "snr": float(found["snr"][j]), "pb": float(found["pb"][j])})
    used = [m for m in matches if m["snr"] >= min_match_snr and m["catalogue_flux_jy"] > 0]
    summary.update(n_matched=len(matches), n_used=len(used))
    if used:
        sep_used = np.array([m["sep_arcsec"] for m in used])
        vec = np.array([[m["east_arcsec"], m["north_arcsec"]] for m in used])
        systematic = np.median(vec, axis=0)
        ratio = np.array([m["flux_jy"] / m["catalogue_flux_jy"] for m in used])
        summary.update(median_offset_arcsec=float(np.median(sep_used)),
                       median_offset_beam=float(np.median(sep_used) / beam_arcsec),
                       systematic_offset_arcsec=[float(systematic[0]), float(systematic[1])],
                       systematic_offset_beam=float(np.hypot(*systematic) / beam_arcsec),
                       flux_ratio=float(np.median(ratio)))
    return summary, matches

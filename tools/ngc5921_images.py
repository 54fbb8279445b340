"""The VLA NGC5921 data set through ``contimg run`` (generic input) beside CASA's calibration and
``tclean`` on the same file, in one tool run: the flux densities in each field's image, the
transferred flux of 1445+099, and the NGC5921 field's sources and noise.

    python tools/ngc5921_images.py run [--workdir /tmp/ngc5921_images] \\
        [--out docs/benchmarks/ngc5921_images.json]     # also writes the .md beside it
    python tools/ngc5921_images.py report docs/benchmarks/ngc5921_images.json

1. contimg: `contimg.service.batch.run_file` (what ``contimg run NGC5921.fits`` does) with the
   ``dsa110`` config, reference antenna VLA:N2 (CASA's "15"), products restored, residual,
   pbcor. Its flagger, its calibration (3C286 = Perley-Butler 2017, bandpass, per-scan gains,
   flux transfer to 1445+099) and its imaging (Briggs, Cotton-Schwab CLEAN to 3 sigma).
2. CASA (the CASA venv, a subprocess: ``tools/casa_ngc5921.py image``): the tutorial's
   calibration (autocorrelations flagged, setjy, bandpass, gaincal on channels 6~56, fluxscale,
   applycal) and ``tclean`` of each field with contimg's image size, cell, the channels contimg
   kept (its flags), the same robust, iteration limit, loop gain and n-sigma threshold.
3. The comparison: per field the restored image at the phase centre (the calibrators are point
   sources there) and its noise (1.4826 MAD of the residual); in the NGC5921 field every island
   above 10 sigma of CASA's image, the peak of each image within a beam of it; the RMS of the
   difference of the two restored images inside the primary beam's half power, over the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import casa_ngc5921 as casa_tool  # noqa: E402  (stdlib + numpy at import)

CASA_PYTHON = Path(os.environ.get("CASA_VENV", "/work/casa-venv")) / "bin/python"
PREFIXES = ("1331+305", "1445+099", "N5921")


def _prefix(name: str) -> str:
    return next(p for p in PREFIXES if name.startswith(p))


def _read(path: str):
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(path) as hdul:
        return np.asarray(hdul[0].data, np.float64)[0, 0], WCS(hdul[0].header).celestial


def _islands(image: np.ndarray, noise: float, nsigma: float = 10.0) -> list[tuple[int, int]]:
    from scipy import ndimage

    labels, n = ndimage.label(image > nsigma * noise)
    return [tuple(int(v) for v in p) for p in ndimage.maximum_position(image, labels, np.arange(1, n + 1))]


def _local_max(image: np.ndarray, yx: tuple[int, int], r: int) -> float:
    y, x = yx
    return float(image[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].max())


def compare_field(contimg: dict, casa: dict, *, target: bool) -> dict:
    """One field's restored images (same grid: checked through their WCS) side by side."""
    ci, cw = _read(contimg["files"]["restored"])
    ki, kw = _read(casa["files"]["restored"])
    if ci.shape != ki.shape or not (np.allclose(cw.wcs.crval, kw.wcs.crval, atol=1e-7)
                                    and np.allclose(cw.wcs.cdelt, kw.wcs.cdelt, rtol=1e-6)
                                    and np.allclose(cw.wcs.crpix, kw.wcs.crpix)):
        raise SystemExit(f"contimg's and CASA's images are not on the same grid: {cw.wcs} / {kw.wcs}")
    n = ci.shape[0]
    out = {"npix": n, "cell_arcsec": contimg["cell_arcsec"], "channels": [contimg["channels_used"][0],
                                                                          contimg["channels_used"][-1]],
           "contimg": {k: contimg[k] for k in ("peak_jy", "centre_jy", "noise_jy", "beam_arcsec", "beam_pa_deg")},
           "casa": {k: casa[k] for k in ("peak_jy", "centre_jy", "noise_jy", "beam_arcsec", "beam_pa_deg")}}
    out["centre_ratio_contimg_over_casa"] = contimg["centre_jy"] / casa["centre_jy"]
    out["noise_ratio_contimg_over_casa"] = contimg["noise_jy"] / casa["noise_jy"]
    pb, _ = _read(casa["files"]["pb"])
    inner = pb >= 0.5
    diff = (ci - ki)[inner]
    out["difference_rms_over_casa_noise"] = float(np.sqrt(np.mean(diff**2)) / casa["noise_jy"])
    if target:
        beam_pix = int(np.ceil(casa["beam_arcsec"][0] / contimg["cell_arcsec"]))
        rows = []
        for yx in _islands(ki, casa["noise_jy"]):
            ra, dec = kw.pixel_to_world_values(yx[1], yx[0])
            k, c = _local_max(ki, yx, beam_pix), _local_max(ci, yx, beam_pix)
            rows.append({"ra_deg": float(ra), "dec_deg": float(dec), "pb": float(pb[yx]), "casa_jy": k, "contimg_jy": c,
                         "ratio": c / k, "snr_casa": k / casa["noise_jy"]})
        rows.sort(key=lambda r: -r["casa_jy"])
        out["sources"] = rows
        if rows:
            r = np.array([x["ratio"] for x in rows])
            out["sources_ratio_median"] = float(np.median(r))
            out["sources_ratio_max_abs_dev"] = float(np.abs(r - 1).max())
    return out


def contimg_config():
    """contimg's configuration for this comparison: dsa110, CASA's reference antenna."""
    from contimg.config import load_config

    return load_config("dsa110", use_env=False, overrides={
        "calibrate": {"refant": "VLA:N2", "refant_fallbacks": []},
        "image": {"products": ["restored", "residual", "pbcor"]}})


def cmd_run(args: argparse.Namespace) -> int:
    from contimg.service.batch import run_file

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    load = [round(x, 2) for x in os.getloadavg()]
    cfg = contimg_config()
    t0 = time.perf_counter()
    summary = run_file(args.fits, root=work / "contimg", cfg=cfg)[1]
    t_contimg = time.perf_counter() - t0
    fields = {_prefix(name): f for name, f in summary["fields"].items()}
    spec = {"fields": {p: {"imsize": f["npix"], "cell_arcsec": f["cell_arcsec"],
                           "spw": f"0:{f['channels_used'][0]}~{f['channels_used'][-1]}"} for p, f in fields.items()},
            "robust": cfg.image.robust, "niter": cfg.image.niter, "gain": cfg.image.loop_gain,
            "nsigma": cfg.image.threshold_sigma}
    spec_path = work / "casa_spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    casa_json = work / "casa_images.json"
    cmd = [str(CASA_PYTHON), str(ROOT / "tools/casa_ngc5921.py"), "image", "--fits", str(args.fits), "--spec",
           str(spec_path), "--workdir", str(work / "casa"), "--out", str(casa_json)]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    t_casa = time.perf_counter() - t0
    casa = json.loads(casa_json.read_text())
    cal = summary["calibration"]
    (t_name, t_flux), = cal["transferred_fluxes"].items()
    result = {
        "tool": "tools/ngc5921_images.py run", "command": " ".join(["python", *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_at_start": load},
        "input": str(args.fits), "casa_version": casa["versions"].get("casa"),
        "contimg_summary": {k: summary[k] for k in ("telescope", "rows", "channels", "scans", "flagged_fraction",
                                                    "calibration", "timings_s")},
        "casa_spec": spec,
        "flux_1445": {"contimg_jy": t_flux["flux_jy"], "contimg_err_jy": t_flux["flux_err_jy"],
                      "casa_jy": casa["fluxscale"]["flux_jy"], "casa_err_jy": casa["fluxscale"]["flux_err_jy"],
                      "ratio": t_flux["flux_jy"] / casa["fluxscale"]["flux_jy"]},
        "fields": {p: compare_field(fields[p], casa["fields"][p], target=p == "N5921") for p in PREFIXES},
        "wall_s": {"contimg": round(t_contimg, 3), "casa_subprocess": round(t_casa, 3),
                   "casa_steps": casa["timings_s"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(casa_tool._dumps(casa_tool._jsonable(result, digits=6)))
    print(f"wrote {args.out}")
    write_report(args.out, args.out.with_suffix(".md"))
    return 0


def write_report(json_path: Path, md_path: Path) -> None:
    r = json.loads(Path(json_path).read_text())
    f14 = r["flux_1445"]
    L = ["# NGC5921 through `contimg run` beside CASA (calibration and tclean)", "",
         "Generated by `tools/ngc5921_images.py` from `ngc5921_images.json` (no number here is typed by hand).", "",
         "```bash", r["command"].replace("python tools", "python tools", 1), "```", "",
         f"Input `{r['input']}`; CASA {r['casa_version']}; {r['date_utc']}; {r['machine']['cpus']} CPUs, load "
         f"average {r['machine']['load_average_at_start']} at the start.", "",
         "contimg: `contimg run NGC5921.fits` (`contimg.pipeline.generic`, config `dsa110`, refant VLA:N2): its own "
         f"flagger ({r['contimg_summary']['flagged_fraction']:.1%} of the cross-correlation samples flagged, "
         "mostly the band edges of the calibrator scans where the bandpass rolls off), 3C286 = Perley-Butler "
         "2017, bandpass, per-scan gains on the central 80 % of the channels, flux transfer, gains interpolated "
         "in time to NGC5921, Briggs-weighted Cotton-Schwab CLEAN. CASA: the tutorial's calibration "
         "(`tools/casa_ngc5921.py`: autocorrelations flagged, setjy, bandpass, gaincal on channels 6~56, "
         "fluxscale, applycal) and `tclean` (hogbom, standard gridder) on contimg's grid and channels with "
         "the same robust, iteration limit, loop gain and n-sigma threshold.", "",
         "## Flux scale", "",
         "| | contimg | CASA | contimg / CASA |", "| --- | ---: | ---: | ---: |",
         f"| 1445+099 transferred flux (Jy) | {f14['contimg_jy']:.5f} ± {f14['contimg_err_jy']:.5f} | "
         f"{f14['casa_jy']:.5f} ± {f14['casa_err_jy']:.5f} | {f14['ratio']:.5f} |"]
    for p, f in r["fields"].items():
        c, k = f["contimg"], f["casa"]
        L += [f"| {p} image at the phase centre (Jy/beam) | {c['centre_jy']:.5f} | {k['centre_jy']:.5f} | "
              f"{f['centre_ratio_contimg_over_casa']:.5f} |"]
    L += ["", "## Images", "",
          "| field | pixels x cell | channels | beam contimg | beam CASA | noise contimg (mJy/beam) | noise CASA | "
          "RMS(contimg - CASA) / CASA noise, inside half power |",
          "| --- | --- | --- | --- | --- | ---: | ---: | ---: |"]
    for p, f in r["fields"].items():
        c, k = f["contimg"], f["casa"]
        L += [f"| {p} | {f['npix']} x {f['cell_arcsec']:.2f}\" | {f['channels'][0]}~{f['channels'][1]} | "
              f"{c['beam_arcsec'][0]:.1f}\" x {c['beam_arcsec'][1]:.1f}\" | {k['beam_arcsec'][0]:.1f}\" x "
              f"{k['beam_arcsec'][1]:.1f}\" | {1e3 * c['noise_jy']:.3f} | {1e3 * k['noise_jy']:.3f} | "
              f"{f['difference_rms_over_casa_noise']:.2f} |"]
    t = r["fields"]["N5921"]
    L += ["", f"## NGC5921 field: every island above 10 sigma in CASA's image ({len(t.get('sources', []))})", "",
          "| RA (deg) | Dec (deg) | primary beam | CASA (mJy/beam) | contimg (mJy/beam) | contimg / CASA |",
          "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in t.get("sources", []):
        L += [f"| {s['ra_deg']:.4f} | {s['dec_deg']:.4f} | {s['pb']:.2f} | {1e3 * s['casa_jy']:.2f} | "
              f"{1e3 * s['contimg_jy']:.2f} | {s['ratio']:.3f} |"]
    if t.get("sources"):
        L += ["", f"Median ratio {t['sources_ratio_median']:.4f}, largest deviation "
              f"{t['sources_ratio_max_abs_dev']:.1%} (each image's maximum within a beam of CASA's peak "
              "pixel; both images apparent, not primary-beam corrected)."]
    L += ["", "## Wall time (s)", "", f"contimg (read, flag, calibrate, image 3 fields): {r['wall_s']['contimg']:.1f}; "
          f"CASA subprocess (import, calibrate, tclean 3 fields, export): {r['wall_s']['casa_subprocess']:.1f}.",
          f"contimg steps: {json.dumps(r['contimg_summary']['timings_s'])}.", ""]
    Path(md_path).write_text("\n".join(L))
    print(f"wrote {md_path}")


def cmd_report(args: argparse.Namespace) -> int:
    write_report(args.json, args.json.with_suffix(".md"))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--fits", type=Path, default=casa_tool.DATA)
    r.add_argument("--workdir", type=Path, default=Path("/tmp/ngc5921_images"))
    r.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/ngc5921_images.json")
    r.set_defaults(func=cmd_run)
    p = sub.add_parser("report")
    p.add_argument("json", type=Path)
    p.set_defaults(func=cmd_report)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

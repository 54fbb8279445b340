"""What the after-group update costs at real size (issue 23: the running mosaic and the catalogue
at most 10 % of a group's processing time), and contimg's resampling beside reproject's.

On a root that `contimg run` made (real-size groups), in a work folder beside it (the root's
products linked, its products DB copied with the catalogue and the mosaics emptied), each
completed group in time order goes through what the service runs after it
(`contimg.pipeline.mosaic.after_group`), part by part: loading its images, the catalogue
(`update_catalogue`) and the running mosaic (`update_running_mosaic`), with the process's peak
resident memory above its level before (sampled every 20 ms). The group's processing time is
what the service recorded for it in the root (`performance_metrics`: read + flag + calibrate +
image + write; the first group of a fresh install includes numba's compilation), so run
`contimg run` on a quiet machine first; the ratio to `docs/benchmarks/bench.json`'s full chain
per group (measured alone by `tools/bench.py`) is printed beside it.

Then the peer, side by side on each group: the group's restored and residual images and beam
resampled onto the box of its span's grid that it covers, by `reproject.reproject_interp`
(bicubic, the beam bilinear; the old path) and by contimg's resampler (`prepare_image` +
`add_image` on an empty mosaic of that box), timed alternately three times each (the best
kept), and the largest difference of the primary-beam-corrected image between the two, in units
of the image's peak.

    contimg run /tmp/rs2 --root /tmp/rsroot --config dsa110
    python tools/bench_after_group.py --root /tmp/rsroot --work /tmp/agwork \\
        --out docs/benchmarks/catalogue_mosaic.json > docs/benchmarks/catalogue_mosaic.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zarr
from astropy.io import fits

from contimg.config import load_config
from contimg.mosaic import add_image, empty_mosaic, footprint_box, prepare_image
from contimg.pipeline.catalogue import update_catalogue
from contimg.pipeline.groupimage import load_group_image
from contimg.pipeline.mosaic import mosaic_paths, update_running_mosaic
from contimg.state.catalogue import CatalogueDB
from contimg.state.ingest import IngestDB
from contimg.state.mosaics import MosaicsDB
from contimg.state.products import ProductsDB

STAGES = ("read", "flag", "calibrate", "image", "write")


class PeakRSS:
    """The process's peak resident memory above a baseline, sampled every 20 ms."""

    def __init__(self):
        self.proc = psutil.Process()
        self.peak = self.base = 0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def reset(self):
        self.base = self.peak = self.proc.memory_info().rss

    def above_gib(self) -> float:
        return (self.peak - self.base) / 2**30


def work_root(root: Path, work: Path) -> Path:
    """A root sharing ``root``'s products, with its own products DB: no catalogue, no span mosaic."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "state").mkdir(parents=True)
    (work / "products").symlink_to((root / "products").resolve())
    shutil.copy2(root / "state" / "products.sqlite3", work / "state" / "products.sqlite3")
    cat = CatalogueDB(work / "state" / "products.sqlite3")
    cat.clear()
    cat.close()
    mos = MosaicsDB(work / "state" / "products.sqlite3")
    mos.delete(kind="span")
    mos.delete(kind="custom")
    mos.close()
    return work


def group_seconds(root: Path, gid: str) -> dict:
    db = IngestDB(root / "state" / "ingest.sqlite3")
    try:
        rows = db.metrics(gid)
    finally:
        db.close()
    out = {}
    for r in rows:
        if r["stage"] in STAGES:
            out[r["stage"]] = out.get(r["stage"], 0.0) + float(r["seconds"])
    return out


def resample_peers(img, header, cfg) -> dict:
    """reproject against contimg on one group's box of its span grid: best of three each."""
    from astropy.wcs import WCS
    from reproject import reproject_interp

    wcs = WCS(header).celestial
    shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    y0, y1, x0, x1 = footprint_box(wcs_in=img.wcs, shape_in=img.pb.shape, wcs_out=wcs, shape_out=shape)
    box_wcs, box_shape = wcs[y0:y1, x0:x1], (y1 - y0, x1 - x0)
    times = {"reproject": [], "contimg": []}
    for _ in range(3):
        t = time.perf_counter()
        stack, _ = reproject_interp((np.stack([img.restored, img.residual]).astype(np.float64), img.wcs), box_wcs,
                                    shape_out=box_shape, order="bicubic", roundtrip_coords=False)
        pb, _ = reproject_interp((img.pb.astype(np.float64), img.wcs), box_wcs, shape_out=box_shape, order="bilinear",
                                 roundtrip_coords=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = np.where(pb >= cfg.mosaic.pb_cutoff, stack[0] / pb, np.nan)
        times["reproject"].append(time.perf_counter() - t)
        del stack
        t = time.perf_counter()
        prepared = prepare_image(planes={"image": img.restored, "residual": img.residual}, pb=img.pb,
                                 noise_jy=img.noise_jy, wcs=img.wcs, order="bicubic")
        mosaic = empty_mosaic(shape=box_shape)
        add_image(mosaic, image=prepared, wcs_out=box_wcs, pb_cutoff=cfg.mosaic.pb_cutoff)
        times["contimg"].append(time.perf_counter() - t)
        del prepared
    both = np.isfinite(ref) & np.isfinite(mosaic.plane("image"))
    peak = float(np.nanmax(np.abs(img.restored / np.where(img.pb >= cfg.mosaic.pb_cutoff, img.pb, np.nan))))
    return {"box": [int(y0), int(y1), int(x0), int(x1)], "reproject_s": min(times["reproject"]),
            "contimg_s": min(times["contimg"]), "pixels_both": int(both.sum()),
            "pixels_only_one": int((np.isfinite(ref) != np.isfinite(mosaic.plane("image"))).sum()),
            "max_diff_of_peak": float(np.abs(ref - mosaic.plane("image"))[both].max() / peak)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--config", default="dsa110")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cfg = load_config(args.config)
    work = work_root(args.root, args.work)
    products = ProductsDB(work / "state" / "products.sqlite3")
    gids = [g["group_id"] for g in sorted(products.groups(), key=lambda g: g["mid_mjd"] or 0)
            if g.get("status") == "completed"]
    products.close()
    rss = PeakRSS()
    result = {"machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
              "root": str(args.root), "groups": []}
    for gid in gids:
        rss.reset()
        t0 = time.perf_counter()
        img = load_group_image(work, gid)
        t1 = time.perf_counter()
        update_catalogue(work, gid, cfg=cfg, image=img)
        t2 = time.perf_counter()
        rows = update_running_mosaic(work, gid, cfg=cfg, image=img)
        t3 = time.perf_counter()
        stages = group_seconds(args.root, gid)
        row = {"group": gid, "load_s": t1 - t0, "catalogue_s": t2 - t1, "mosaic_s": t3 - t2, "total_s": t3 - t0,
               "peak_above_gib": rss.above_gib(), "stages_s": stages, "group_s": sum(stages.values()),
               "spans": [r["name"] for r in rows]}
        row["ratio"] = row["total_s"] / row["group_s"] if row["group_s"] else None
        del img
        result["groups"].append(row)
        args.out.write_text(json.dumps(result, indent=1))
    for row in result["groups"]:
        img = load_group_image(work, row["group"])
        store = zarr.open_group(str(mosaic_paths(work, row["spans"][0])["zarr"]), mode="r")
        header = fits.Header.fromstring(store.attrs["header"])
        row["resampling"] = resample_peers(img, header, cfg)
        del img
        args.out.write_text(json.dumps(result, indent=1))
    print("# The after-group update at real size, and the resampling beside reproject\n")
    print("Generated by `python tools/bench_after_group.py --root /tmp/rsroot --work /tmp/agwork "
          f"--out docs/benchmarks/catalogue_mosaic.json` ({result['machine']['cpus']} CPUs, Python "
          f"{result['machine']['python']}) on a root that `contimg run /tmp/rs2 --root /tmp/rsroot --config dsa110` "
          "made of two real-size groups (`contimg simulate /tmp/rs2 --config dsa110 --groups 2`: 96 antennas, 768 "
          "channels, 24 integrations; 4096² images at 3\"). The group's time is what the service recorded for its "
          "stages when it made the root.\n")
    bench = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "bench.json"
    full_s = json.loads(bench.read_text())["summary"]["full_processing_s"] if bench.is_file() else None
    result["bench_full_processing_s"] = full_s
    args.out.write_text(json.dumps(result, indent=1))
    print("| group | group's stages (s) | load (s) | catalogue (s) | mosaic (s) | update total (s) | ratio | "
          f"ratio to bench.md's full chain ({full_s} s) | peak memory above (GiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["groups"]:
        to_bench = f"{r['total_s'] / full_s:.3f}" if full_s else "n/a"
        print(f"| {r['group']} | {r['group_s']:.1f} | {r['load_s']:.2f} | {r['catalogue_s']:.2f} | "
              f"{r['mosaic_s']:.2f} | {r['total_s']:.2f} | {r['ratio']:.3f} | {to_bench} | {r['peak_above_gib']:.2f} |")
    print("\nResampling one group onto the box of its span's grid it covers (image + residual bicubic, the beam "
          "bilinear), best of three each, alternating:\n")
    print("| group | box (pixels) | reproject_interp (s) | contimg (s) | reproject / contimg | largest difference "
          "(of the pbcor image's peak) | pixels covered by one only |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in result["groups"]:
        p = r["resampling"]
        y0, y1, x0, x1 = p["box"]
        print(f"| {r['group']} | {y1 - y0} × {x1 - x0} | {p['reproject_s']:.2f} | {p['contimg_s']:.2f} | "
              f"{p['reproject_s'] / p['contimg_s']:.1f} | {p['max_diff_of_peak']:.1e} | {p['pixels_only_one']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

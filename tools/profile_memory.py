"""Where one group's memory and time go: the stages in this process, resident memory sampled.

    python tools/profile_memory.py --data /tmp/rs2 [--config dsa110] [--groups 2] [--json F] [--markdown F]

Runs the read, flag, calibrate, image and write stages of the first ``--groups`` groups in
``--data`` (the calibrator group's registration handed to the next, as the service does) in
this process's main thread, with a thread sampling the resident set (``/proc/self/statm``)
every 10 ms. The science functions the stages call are wrapped so each call is one span:
its seconds, the resident set when it starts, the highest during it and at its end (GiB).
Prints a Markdown table per group and the process's peak (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
GIB = 2.0**30

# (module, attribute): the calls worth a span, as the stages reach them
WRAPPED = [
    ("contimg.pipeline.stages", "read_group"),
    ("contimg.pipeline.stages", "flag_group"),
    ("contimg.pipeline.stages", "solve_or_look_up"),
    ("contimg.pipeline.stages", "apply_gains"),
    ("contimg.pipeline.stages", "fit_and_subtract"),
    ("contimg.pipeline.stages", "stokes_i_for_imaging"),
    ("contimg.pipeline.stages", "image_stokes_i"),
    ("contimg.pipeline.stages", "save_imageset"),
    ("contimg.pipeline.stages", "write_zarr"),
    ("contimg.pipeline.stages", "write_fits"),
    ("contimg.imaging.imager", "rephase_stokes_i"),
    ("contimg.imaging.imager", "clean_image"),
    ("contimg.imaging.imager", "imaging_weights"),
    ("contimg.imaging.imager", "cotton_schwab"),
    ("contimg.imaging.imager", "average_primary_beam"),
    ("contimg.imaging.imager", "fit_beam"),
    ("contimg.imaging.imager", "restore"),
    ("contimg.imaging.grid", "dirty_image"),
    ("contimg.imaging.grid", "predict_from_image"),
]


class Sampler(threading.Thread):
    """Samples this process's resident set; `peak_since` answers the highest since a mark."""

    def __init__(self, period_s: float = 0.01):
        super().__init__(daemon=True)
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []  # (perf_counter, GiB)
        self._stop = threading.Event()

    @staticmethod
    def rss_gib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / GIB

    def run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.rss_gib()))
            time.sleep(self.period_s)

    def peak_between(self, t0: float, t1: float) -> float:
        vals = [g for t, g in self.samples if t0 <= t <= t1]
        return max(vals) if vals else self.rss_gib()

    def stop(self) -> None:
        self._stop.set()


def wrap_all(sampler: Sampler, spans: list[dict]) -> None:
    depth = [0]

    def wrap(name, fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            start_rss, t0 = sampler.rss_gib(), time.perf_counter()
            depth[0] += 1
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                t1 = time.perf_counter()
                spans.append({"name": name, "depth": depth[0], "t0": t0, "s": t1 - t0, "start_gib": start_rss,
                              "peak_gib": max(sampler.peak_between(t0, t1), start_rss, sampler.rss_gib()),
                              "end_gib": sampler.rss_gib()})
        return inner

    for mod_name, attr in WRAPPED:
        mod = importlib.import_module(mod_name)
        setattr(mod, attr, wrap(attr, getattr(mod, attr)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--config", default="dsa110")
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path, help="also write the tables here, with the command and the machine")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]

    from contimg.config import load_config
    from contimg.io.naming import group_files, scan_folder
    from contimg.pipeline.stages import STAGES, GroupWork, run_stage

    cfg = load_config(args.config, use_env=False)
    groups = group_files(scan_folder(args.data), tolerance_s=60)[: args.groups]
    sampler = Sampler()
    sampler.start()
    spans: list[dict] = []
    wrap_all(sampler, spans)
    report = {"config": args.config, "baseline_gib": sampler.rss_gib(), "groups": []}
    with tempfile.TemporaryDirectory() as tmp:
        rows: list[dict] = []
        for group in groups:
            work = GroupWork(group=group, root=Path(tmp))
            work.cal_candidates = list(rows)
            stage_rows = []
            first = len(spans)
            for stage in STAGES:
                t0, rss0 = time.perf_counter(), sampler.rss_gib()
                run_stage(stage, work, cfg)
                t1 = time.perf_counter()
                stage_rows.append({"name": stage, "s": t1 - t0, "start_gib": rss0,
                                   "peak_gib": sampler.peak_between(t0, t1), "end_gib": sampler.rss_gib()})
            rows += work.cal_registrations
            report["groups"].append({"group": group.group_id, "stages": stage_rows,
                                     "spans": sorted(spans[first:], key=lambda s: s["t0"])})
            del work
    sampler.stop()
    report["ru_maxrss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    lines = [f"config {args.config}; resident set before the first group {report['baseline_gib']:.2f} GiB; "
             f"process peak (ru_maxrss) {report['ru_maxrss_gib']:.2f} GiB", ""]
    for g in report["groups"]:
        lines += [f"### {g['group']}", "", "| stage / call | s | start GiB | peak GiB | end GiB |", "|---|---:|---:|---:|---:|"]
        for st in g["stages"]:
            lines.append(f"| **{st['name']}** | {st['s']:.2f} | {st['start_gib']:.2f} | {st['peak_gib']:.2f} | "
                         f"{st['end_gib']:.2f} |")
        for sp in g["spans"]:
            lines.append(f"| {'&nbsp;&nbsp;' * sp['depth']}{sp['name']} | {sp['s']:.2f} | {sp['start_gib']:.2f} | "
                         f"{sp['peak_gib']:.2f} | {sp['end_gib']:.2f} |")
        lines.append("")
    print("\n".join(lines))
    if args.markdown:
        import platform

        head = [f"`python tools/profile_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; {os.cpu_count()} cores; load average at the "
                f"start {load0:.2f}; Python {platform.python_version()}. Stages in this process's main "
                "thread; resident set sampled every 10 ms; nested calls indented.", ""]
        args.markdown.write_text("\n".join(head + lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

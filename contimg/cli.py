"""The ``contimg`` command line: simulate, run, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("contimg")


def _config(args):
    from contimg.config import load_config
    from contimg.offline import use_iers_a_file

    cfg = load_config(args.config)
    if cfg.astropy.iers_a_file:
        use_iers_a_file(cfg.astropy.iers_a_file)
    return cfg


def _cmd_simulate(args) -> int:
    from contimg.sim import simulate

    cfg = _config(args)
    sim_cfg = cfg.simulate
    updates = {k: v for k, v in {"seed": args.seed, "n_antennas": args.antennas,
                                 "chans_per_subband": args.chans_per_subband, "n_times": args.times}.items()
               if v is not None}
    if args.no_rfi:
        updates["rfi"] = False
    if updates:
        sim_cfg = sim_cfg.model_validate({**sim_cfg.model_dump(), **updates})
    t0 = time.perf_counter()
    groups = simulate(args.out, n_groups=args.groups, cfg=sim_cfg)
    print(f"simulated {len(groups)} group(s) into {args.out} in {time.perf_counter() - t0:.1f} s "
          f"(truth: {Path(args.out) / 'truth.h5'})")
    return 0


def _print_summary(results, root: Path) -> None:
    for r in results:
        line = f"  {r.group_id}  {r.status:9s}"
        if r.status == "completed":
            st = r.image_stats
            line += (f"  cal={'yes (' + r.calibrator + ')' if r.cal_applied else 'no'}"
                     f"  rms={st['noise_jy'] * 1e3:.2f} mJy  peak={st['peak_jy']:.3f} Jy  "
                     f"time={sum(r.timings_s.values()):.1f} s")
        else:
            line += f"  stage={r.stage}  {r.error}"
        print(line)
    print(f"products: {root / 'products'}  database: {root / 'state' / 'products.sqlite3'}")


def _cmd_run(args) -> int:
    from contimg.pipeline import run_batch

    cfg = _config(args)
    results, code = run_batch(args.input, root=Path(args.root), cfg=cfg)
    _print_summary(results, Path(args.root))
    if code:
        print(f"failures: {Path(args.root) / 'failures.json'}")
    return code


def _cmd_demo(args) -> int:
    from contimg.config import load_config
    from contimg.pipeline import run_batch
    from contimg.sim import simulate

    cfg = load_config(args.config)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="contimg-demo-"))
    incoming = root / "incoming"
    print(f"contimg demo: simulating {args.groups} small group(s) into {incoming}")
    simulate(incoming, n_groups=args.groups, cfg=cfg.simulate)
    print("running the pipeline (read -> flag -> calibrate -> image -> FITS)")
    results, code = run_batch(incoming, root=root, cfg=cfg)
    _print_summary(results, root)
    print(json.dumps({"root": str(root), "exit_code": code}))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="contimg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write simulated DSA-110 subband files and a truth file")
    p.add_argument("out", help="output folder")
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--config", default="dsa110", help="packaged config name or TOML path (default dsa110)")
    p.add_argument("--seed", type=int)
    p.add_argument("--antennas", type=int, help="number of active antennas (default all 96)")
    p.add_argument("--chans-per-subband", type=int)
    p.add_argument("--times", type=int, help="integrations per group")
    p.add_argument("--no-rfi", action="store_true")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("run", help="process every group in a folder as fast as possible")
    p.add_argument("input", help="folder of subband files")
    p.add_argument("--root", required=True, help="output root (products/, state/, cal/)")
    p.add_argument("--config", default="dsa110")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="simulate a few small groups and run them end to end")
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--config", default="test")
    p.add_argument("--root", help="output root (default: a fresh temporary folder)")
    p.add_argument("--exit-when-done", action="store_true",
                   help="exit after the summary (the default until the web view exists)")
    p.set_defaults(func=_cmd_demo)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except Exception as exc:  # a clear message, not a traceback, for bad input at the top level
        from contimg.config import ConfigError

        if isinstance(exc, (ConfigError, FileNotFoundError)):
            print(f"contimg: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())

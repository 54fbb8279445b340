"""Closing a span alone: `update_catalogue_from_mosaic` on one span of a service root, an older
tree against this one, alternately, each in a fresh process (its seconds, the resident set
before the call and the process's peak), the root's products database restored before each
call so that every call finds the same catalogue.

    python tools/bench_span_close.py --root R --name span_20260322T0900_1h --old /tmp/rpOld [--rounds 2]

``--old``: a checkout of the older tree (``git worktree add /tmp/rpOld <commit>``). Prints one
JSON line per call (the tree, seconds, GiB before, peak GiB, added GiB, the call's counts)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ONE = r"""
import json, resource, sys, time
import psutil
import contimg.pipeline.catalogue as c
from contimg.config import load_config
cfg = load_config("dsa110", use_env=False)
rss0 = psutil.Process().memory_info().rss / 2**30
t0 = time.perf_counter()
out = c.update_catalogue_from_mosaic(sys.argv[1], sys.argv[2], cfg=cfg)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"tree": sys.argv[3], "seconds": round(dt, 1), "rss_before_gib": round(rss0, 2),
                  "peak_gib": round(peak, 2), "added_gib": round(peak - rss0, 2), **out}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--old", type=Path, required=True, help="a checkout of the older tree")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    db = args.root / "state" / "products.sqlite3"
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "products.sqlite3"
        shutil.copy2(db, saved)
        try:
            for _ in range(args.rounds):
                for tree in (args.old, here):
                    shutil.copy2(saved, db)
                    subprocess.run([sys.executable, "-c", ONE, str(args.root), args.name, str(tree)], check=True,
                                   cwd=tmp, env=dict(os.environ, PYTHONPATH=str(tree)))
        finally:
            shutil.copy2(saved, db)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load on the web view: does a crowd of WebSocket clients slow the pipeline?

    python tools/bench_web_load.py --work /tmp/webload --groups 10 --clients 50 --stalled 10

Replays the same simulated groups twice through `contimg replay --web` (quick config, 1000x):
once with no client, once with ``--clients`` WebSocket clients on loopback (``--repeat`` N times,
alternating, the medians then pooled over the runs), ``--stalled`` of
which connect and never read (the rest read /ws/status and /ws/waterfall with changing
selections). Compares the median per-group processing time (read + flag + calibrate + image +
write, from ingest.sqlite3) and the service's peak RSS (sampled with psutil) between the runs.
Prints Markdown for docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import websockets

STAGES = ("read", "flag", "calibrate", "image", "write")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _clients(port: int, n: int, stalled: int, stop: threading.Event, counts: dict) -> None:
    base = f"ws://127.0.0.1:{port}"
    while True:  # wait for the web view
        try:
            async with websockets.connect(base + "/ws/status"):
                break
        except OSError:
            await asyncio.sleep(0.2)

    async def reader(i: int) -> None:
        path = "/ws/status" if i % 2 else f"/ws/waterfall?select={'avg' if i % 4 else f'ant:{24 + i % 8}'}&pol=XX"
        async with websockets.connect(base + path, max_size=None) as ws:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), 0.5)
                    counts["received"] += 1
                except TimeoutError:
                    pass

    async def sleeper(i: int) -> None:  # connects, subscribes to the waterfall, never reads
        async with websockets.connect(base + "/ws/waterfall?select=avg&pol=I", max_queue=1):
            while not stop.is_set():
                await asyncio.sleep(0.5)

    tasks = [asyncio.create_task(sleeper(i)) for i in range(stalled)]
    tasks += [asyncio.create_task(reader(i)) for i in range(n - stalled)]
    await asyncio.gather(*tasks, return_exceptions=True)


def run(args, in_dir: Path, label: str, clients: int) -> dict:
    root = args.work / f"root-{label}"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    port = _free_port()
    cmd = [sys.executable, "-m", "contimg.cli", "replay", str(in_dir), "--root", str(root), "--speed", "1000",
           "--config", "quick", "--web", "--port", str(port)]
    stop, counts = threading.Event(), {"received": 0}
    thread = None
    if clients:
        thread = threading.Thread(target=lambda: asyncio.run(_clients(port, clients, args.stalled, stop, counts)),
                                  daemon=True)
        thread.start()
    with open(args.work / f"{label}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        ps, peak = psutil.Process(proc.pid), 0.0
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.25)
    stop.set()
    if thread:
        thread.join(10)
    con = sqlite3.connect(root / "state" / "ingest.sqlite3")
    per_group: dict[str, float] = {}
    for gid, stage, sec in con.execute("SELECT group_id, stage, seconds FROM performance_metrics"):
        if stage in STAGES:
            per_group[gid] = per_group.get(gid, 0.0) + sec
    con.close()
    return {"label": label, "code": proc.returncode, "clients": clients, "peak": peak,
            "group_s": sorted(per_group.values()), "received": counts["received"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--stalled", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate idle and loaded runs this many times (on a shared machine, so that a change "
                         "in the machine's other load falls on both); the ratio is of the pooled medians")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    in_dir = args.work / f"in-test-{args.groups}"
    if not list(in_dir.glob("*_sb00.hdf5")):
        subprocess.run([sys.executable, "-m", "contimg.cli", "simulate", str(in_dir), "--groups", str(args.groups),
                        "--config", "test"], check=True, stdout=subprocess.DEVNULL)  # the report is stdout
    runs = []
    for k in range(args.repeat):
        suffix = f"-{k + 1}" if args.repeat > 1 else ""
        runs += [run(args, in_dir, "idle" + suffix, 0), run(args, in_dir, "loaded" + suffix, args.clients)]
    print(f"# Web view under load: {args.clients} WebSocket clients ({args.stalled} never reading)\n")
    print(f"Machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; Python "
          f"{platform.python_version()}; {time.strftime('%Y-%m-%d')}. {args.groups} test-size groups replayed at "
          f"1000x with the quick config, the service and the clients on loopback.\n")
    print("Command: `python tools/bench_web_load.py " + " ".join(sys.argv[1:]) + "`\n")
    print("| run | exit | clients | groups | median group s | mean group s | peak RSS MiB | messages received |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['label']} | {r['code']} | {r['clients']} | {len(r['group_s'])} | "
              f"{statistics.median(r['group_s']):.2f} | {statistics.mean(r['group_s']):.2f} | {r['peak']:.0f} | "
              f"{r['received']} |")
    idle = [r for r in runs if not r["clients"]]
    loaded = [r for r in runs if r["clients"]]
    pooled = {name: sorted(t for r in rs for t in r["group_s"]) for name, rs in (("idle", idle), ("loaded", loaded))}
    print(f"\nMedian group time loaded / idle: {statistics.median(pooled['loaded']) / statistics.median(pooled['idle']):.3f}"
          f"{' (all runs pooled)' if args.repeat > 1 else ''}; peak RSS loaded / idle: "
          f"{max(r['peak'] for r in loaded) / max(r['peak'] for r in idle):.3f}")
    print(json.dumps(pooled), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

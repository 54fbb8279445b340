"""Files → FITS per real-size group on the device beside the CPU chain, and the device imager on
one real-size group's visibilities beside ducc0 on the host's cores.

    python tools/bench_gpu.py --out docs/benchmarks/gpu_imaging.json --chain /tmp/rs1   # on a GPU machine
    python tools/bench_gpu.py --small --backend twin --chain /tmp/small --out /tmp/gpu_small.json  # checks it on a CPU

The chain (``--chain DIR``: the first group of DIR, simulated there with ``contimg simulate``'s
code when DIR has none; dsa110, or with ``--small`` the test config at 6 integrations): read,
flag, calibrate, image, write of `contimg.pipeline.stages` — what ``contimg run`` runs per group
— with every stage on ``--backend`` ("gpu"; "twin": the device path's array code on numpy), in
quick mode (the quick config's image) and full mode (the dsa110 image: 4096² at 3", the CPU full
mode's cleaning), then the same two on the CPU chain (numba/ducc0, every host core), in this
process on the same files. Per stage: wall time (perf_counter) and, on a device, the device
time between CUDA events recorded before and after it; the group's host↔device bytes
(`contimg.device.transfer`, counted by the stages) against its visibility bytes; the device
pool's high-water mark (the largest bytes CuPy's pool had in use at any allocation: an
allocator that reads the pool after every malloc). The first device run (quick) also compiles
the kernels: it is marked ``cold``. Skip with ``--no-cpu-chain`` / ``--chain-modes``.
The JSON (--out) is rewritten after every measurement, so a timeout keeps what was measured.

Then, unless ``--chain-only``:

What it measures, in one run, on the same visibilities (DSA-110 layout, 96 antennas, 4560
baselines, 24 integrations of 12.9 s around transit, 768 channels: 84 M visibilities; a sky
of point sources predicted with ducc0, plus noise):

0. each stage's device self-check against its CPU twin (`contimg.imaging.selfcheck`): the
   backend it would choose and the check's figures;
1. gridding (vis2dirty, 4096² at 3", epsilon 1e-4) and degridding (dirty2vis): contimg's
   w-stacking gridder (numba-cuda kernels, `contimg.kernels.wgrid`) vs ducc0 on every host
   core; visibilities per second; the kernels' share of the time beside the FFTs; the
   relative L2 difference of the two images;
2. the gridder's two numbers (bytes it must move, operations it must do) against its time;
3. the Högbom minor cycle: `contimg.kernels.hogbom` (numba-cuda) vs the numba twin on the
   same active set;
4. a full clean (``clean_image``, the dsa110 config: 4096², Briggs 0, 1000 iterations) on the
   device and on the CPU: wall time, the device memory CuPy's pool holds after it, the restored
   images' difference relative to the noise, the components.
Timings: contimg's gridding, degridding, kernels, FFT and Högbom runs are the median of
``--repeats`` after one warm-up (``median_s``; CUDA events on a device, perf_counter on the
host; the warm-up also compiles the numba-cuda kernels); ducc0's gridding and degridding are
one cold run each, no warm-up (``wall_s``); the full cleans are one run each (wall time).
The JSON holds the device name, driver, runtime and CuPy and numba-cuda versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from astropy.stats import mad_std

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contimg.config import load_config  # noqa: E402
from contimg.sky.geometry import baseline_uvw, hadec_basis  # noqa: E402
from contimg.sky.telescope import active_station_numbers, stations  # noqa: E402

SIDEREAL_S = 86164.0905


def synthetic_group(*, small: bool, seed: int = 3) -> dict:
    """uvw (nrow, 3) m, freq (nchan,), vis (nrow, nchan) complex64, wgt float32 of a real-size
    group (``small``: 24 antennas, 64 channels) phased to the meridian at mid-time, dec 40 deg."""
    ants = active_station_numbers(24 if small else None)
    enu = stations().enu_m
    a1, a2 = np.triu_indices(ants.size, k=1)
    a1, a2 = ants[a1], ants[a2]
    ntime, tint = 24, 12.884902
    nchan = 64 if small else 768
    freq = 1.311e9 + (np.arange(nchan) + 0.5) * (1.499e9 - 1.311e9) / nchan
    ha = (np.arange(ntime) - (ntime - 1) / 2) * tint * 2 * np.pi / SIDEREAL_S
    dec = np.radians(40.0)
    basis = np.stack([hadec_basis(ha_rad=float(h), dec_rad=dec) for h in ha])
    uvw = baseline_uvw(ant_enu_m=enu, ant1=a1, ant2=a2, basis=basis).reshape(-1, 3)
    return {"uvw": uvw, "freq": freq, "nant": int(ants.size), "ntime": ntime}


def sky_visibilities(g: dict, *, npix: int, cell_rad: float, nthreads: int, seed: int = 3) -> None:
    """Point sources (0.01–1 Jy) predicted with ducc0, plus noise (0.5 Jy per visibility)."""
    import ducc0.wgridder.experimental as wg

    rng = np.random.default_rng(seed)
    model = np.zeros((npix, npix), np.float32)
    n = 40
    ys = rng.integers(npix // 8, 7 * npix // 8, n)
    xs = rng.integers(npix // 8, 7 * npix // 8, n)
    model[ys, xs] = 10 ** rng.uniform(-2, 0, n)
    vis = wg.dirty2vis(uvw=g["uvw"], freq=g["freq"], dirty=model.T.copy(), pixsize_x=cell_rad, pixsize_y=cell_rad,
                       epsilon=1e-5, do_wgridding=True, divide_by_n=False, nthreads=nthreads, flip_v=True)
    vis += (0.5 * (rng.standard_normal(vis.shape) + 1j * rng.standard_normal(vis.shape))).astype(np.complex64)
    g["vis"] = vis.astype(np.complex64)
    g["wgt"] = np.ones(vis.shape, np.float32)


class Timer:
    """Median of repeats after one warm-up: CUDA events on a device, perf_counter on the host."""

    def __init__(self, xp):
        self.xp = xp

    def __call__(self, fn, repeats: int) -> dict:
        fn()
        times = []
        for _ in range(repeats):
            if self.xp is np:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            else:
                start, stop = self.xp.cuda.Event(), self.xp.cuda.Event()
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                times.append(self.xp.cuda.get_elapsed_time(start, stop) / 1e3)
        return {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "max_s": float(np.max(times)),
                "repeats": repeats}


def device_info(xp) -> dict:
    if xp is np:
        return {"name": "none (numpy twin)"}
    from importlib.metadata import version

    rt = xp.cuda.runtime
    props = rt.getDeviceProperties(0)
    return {"name": props["name"].decode(), "driver": rt.driverGetVersion(), "runtime": rt.runtimeGetVersion(),
            "cupy": xp.__version__, "numba_cuda": version("numba-cuda"), "memory_gib": props["totalGlobalMem"] / 2**30,
            "sm_count": props["multiProcessorCount"]}


def gridder_model(*, nvis: int, plan) -> dict:
    """The gridder's two numbers. Bytes: each visibility is read once per w plane its support
    covers (W): 6 x 4 B of kernel position and 8 B of value; each plane's grid is read and
    written by the FFT (3 passes of 8 B a cell, a lower bound) and the image accumulated
    (16 B a pixel, twice). Operations: per visibility and plane, 3 W exp+sqrt (counted 20
    flops each) and W² complex multiply-adds (8 flops)."""
    w, g, n = plan.support, plan.ngrid, plan.npix
    bytes_vis = nvis * w * (24 + 8)
    bytes_grid = plan.nplanes * (3 * 8 * g * g + 2 * 16 * n * n)
    flops_vis = nvis * w * (3 * w * 20 + 8 * w * w)
    flops_fft = plan.nplanes * 5 * g * g * np.log2(g * g)
    return {"bytes": float(bytes_vis + bytes_grid), "flops": float(flops_vis + flops_fft),
            "bytes_visibilities": float(bytes_vis), "bytes_grid": float(bytes_grid),
            "flops_kernels": float(flops_vis), "flops_fft": float(flops_fft)}


class PeakAllocator:
    """CuPy's default pool behind an allocator that reads the pool's bytes in use after every
    malloc: their maximum (``peak``) is the pool's high-water mark (use grows only at a malloc)."""

    def __init__(self, cupy):
        self.cupy = cupy
        self.pool = cupy.get_default_memory_pool()
        self.peak = 0
        cupy.cuda.set_allocator(self.malloc)

    def malloc(self, size: int):
        ptr = self.pool.malloc(size)
        self.peak = max(self.peak, self.pool.used_bytes())
        return ptr

    def reset(self) -> None:
        self.pool.free_all_blocks()
        self.peak = self.pool.used_bytes()


def chain_config(*, small: bool, mode: str, backend: str):
    """The configuration of a chain run: dsa110 (full) or quick, every stage on ``backend``;
    ``small``: the test config with a 256² image (full) or 128² (quick)."""
    if small:
        image = {"npix": 256, "cell_arcsec": 20.0, "niter": 200} if mode == "full" else \
            {"npix": 128, "cell_arcsec": 40.0, "niter": 100}
        cfg = load_config("test", use_env=False, overrides={"simulate": {"n_times": 6}, "image": image,
                                                            "qa": {"plots": False}})
    else:
        cfg = load_config("dsa110" if mode == "full" else "quick", use_env=False, overrides={"qa": {"plots": False}})
    return cfg.model_copy(update={s: getattr(cfg, s).model_copy(update={"backend": backend})
                                  for s in ("flag", "calibrate", "image")})


def run_chain(*, folder: Path, cfg, xp, peak: PeakAllocator | None) -> dict:
    """One group of ``folder`` through the stages into a fresh root: per-stage times, traffic,
    pool high-water mark, what the images found."""
    import tempfile

    from contimg.io.naming import group_files, scan_folder
    from contimg.pipeline.stages import STAGES, GroupWork, run_stage

    group = group_files(scan_folder(folder), tolerance_s=60)[0]
    if peak is not None:
        peak.reset()
    stages: dict = {}
    with tempfile.TemporaryDirectory() as root:
        work = GroupWork(group=group, root=Path(root))
        for stage in STAGES:
            ev = None
            if xp is not np:
                ev = (xp.cuda.Event(), xp.cuda.Event())
                ev[0].record()
            t0 = time.perf_counter()
            run_stage(stage, work, cfg)
            if ev is not None:
                ev[1].record()
                ev[1].synchronize()
            stages[stage] = {"wall_s": time.perf_counter() - t0}
            if ev is not None:
                stages[stage]["device_event_s"] = xp.cuda.get_elapsed_time(*ev) / 1e3
        imgs = work.imgs
        out = {"group": group.group_id, "stages": stages, "total_s": sum(v["wall_s"] for v in stages.values()),
               "products": [Path(p).name for p in work.products], "flag_fraction": work.flag_fraction,
               "n_vis": imgs.stats.get("n_vis"), "npix": int(imgs.images["restored"].shape[0]),
               "clean_iterations": imgs.clean_iterations, "peak_jy": imgs.peak_jy, "noise_jy": imgs.noise_jy,
               "beam_arcsec": [float(np.degrees(b) * 3600) for b in imgs.beam_rad[:2]],
               "transfer_bytes": work.meta.get("transfer_bytes")}
    t = out["transfer_bytes"] or {}
    vis_bytes = (t.get("by_label") or {}).get("h2d:vis")
    if vis_bytes:
        out["visibility_bytes"] = vis_bytes
        out["traffic_over_visibility_bytes"] = (t["h2d"] + t["d2h"]) / vis_bytes
    if peak is not None:
        out["device_pool_high_water_gib"] = peak.peak / 2**30
    return out


def bench_chain(res: dict, *, folder: Path, small: bool, backend: str, xp, modes: list[str], cpu: bool, save) -> None:
    """Files → FITS on ``backend`` and on the CPU, per mode, into ``res`` (saved after each)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*_sb*.hdf5")):
        from contimg.sim import simulate

        t0 = time.perf_counter()
        simulate(folder, n_groups=1, cfg=chain_config(small=small, mode="full", backend="cpu").simulate)
        res["simulate_s"] = time.perf_counter() - t0
    peak = PeakAllocator(xp) if xp is not np else None
    # the device runs first (the first compiles the kernels), then the CPU's, full mode first:
    # a timeout then loses the least useful measurement
    runs = [(backend, m) for m in modes] + ([("cpu", m) for m in sorted(modes, key=lambda m: m != "full")]
                                            if cpu else [])
    cold = True
    for kind, mode in runs:
        key = f"{kind}_{mode}"
        print("chain", key, "...", flush=True)
        try:
            r = run_chain(folder=folder, cfg=chain_config(small=small, mode=mode, backend=kind),
                          xp=xp if kind != "cpu" else np, peak=peak if kind != "cpu" else None)
        except Exception as exc:  # noqa: BLE001 - recorded, the next run goes on
            r = {"error": f"{type(exc).__name__}: {exc}"}
        if kind != "cpu":
            r["cold"], cold = cold, False
        r["cpu_threads"] = os.cpu_count()
        res[key] = r
        print("chain", key, {k: v for k, v in r.items() if k not in ("products",)}, flush=True)
        save()
    for mode in modes:
        d, c = res.get(f"{backend}_{mode}", {}), res.get(f"cpu_{mode}", {})
        if "total_s" in d and "total_s" in c:
            res[f"speedup_{mode}"] = c["total_s"] / d["total_s"]
            res[f"peak_ratio_{mode}"] = d["peak_jy"] / c["peak_jy"] if c["peak_jy"] else None
    save()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--backend", choices=["gpu", "twin"], default="gpu")
    ap.add_argument("--small", action="store_true", help="24 antennas, 64 channels, 1024²: to check the script")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epsilon", type=float, default=1e-4)
    ap.add_argument("--skip-clean", action="store_true")
    ap.add_argument("--chain", type=Path, default=None, help="folder of one real-size group (simulated if empty)")
    ap.add_argument("--chain-modes", default="quick,full", help="comma-separated: quick, full")
    ap.add_argument("--no-cpu-chain", action="store_true", help="skip the CPU chain beside the device one")
    ap.add_argument("--chain-only", action="store_true", help="only the chain: no gridding/Högbom/clean benchmarks")
    args = ap.parse_args(argv)

    import ducc0.wgridder.experimental as wg

    from contimg.imaging import clean, wgrid
    from contimg.imaging.imager import clean_image

    if args.backend == "gpu":
        import cupy as xp
    else:
        xp = np
    nthreads = os.cpu_count() or 1
    cfg = load_config("dsa110")
    npix = 1024 if args.small else cfg.image.npix
    cell = np.radians(cfg.image.cell_arcsec / 3600)
    eps = args.epsilon
    timer = Timer(xp)
    res: dict = {"device": device_info(xp), "host": {"cpu": platform.processor() or platform.machine(),
                                                     "cores": nthreads}, "small": args.small, "epsilon": eps}
    print("device", res["device"], flush=True)

    # 0. the stages' self-checks (on numpy: the device path's array code, "array")
    from contimg.device.selfcheck import chosen_backends
    from contimg.imaging.selfcheck import choose_backends

    choose_backends(device=None if xp is not np else "array")
    res["selfcheck"] = chosen_backends()
    print("selfcheck", {k: (v["backend"], v["reason"]) for k, v in res["selfcheck"].items()}, flush=True)

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1, default=float))

    save()
    if args.chain is not None:
        res["chain"] = {}
        bench_chain(res["chain"], folder=args.chain, small=args.small, backend=args.backend, xp=xp,
                    modes=[m for m in args.chain_modes.split(",") if m], cpu=not args.no_cpu_chain, save=save)
    if args.chain_only:
        save()
        print("wrote", args.out)
        return 0

    g = synthetic_group(small=args.small)
    sky_visibilities(g, npix=npix, cell_rad=cell, nthreads=nthreads)
    nvis = int(g["vis"].size)
    res["data"] = {"nant": g["nant"], "ntime": g["ntime"], "nrow": int(g["uvw"].shape[0]), "nchan": int(g["freq"].size),
                   "nvis": nvis, "npix": npix, "cell_arcsec": cfg.image.cell_arcsec}
    print("data", res["data"], flush=True)
    save()

    # 1. gridding and degridding
    lo, hi = wgrid.w_range(uvw_m=g["uvw"], freq_hz=g["freq"])
    plan = wgrid.plan_grid(npix=npix, cell_rad=cell, epsilon=eps, w_min=lo, w_max=hi)
    res["plan"] = {"ngrid": plan.ngrid, "support": plan.support, "nplanes": plan.nplanes, "dw": plan.dw}
    vis_d, wgt_d = xp.asarray(g["vis"]), xp.asarray(g["wgt"])
    holder: dict = {}

    def prepare():
        p = wgrid.prepare_visibilities(plan=plan, uvw_m=g["uvw"], freq_hz=g["freq"], select=wgt_d > 0, xp=xp)
        holder["prep"] = wgrid._backend_ops(xp, plan, p)[0]

    res["prepare"] = timer(prepare, max(1, args.repeats // 2))
    prep = holder["prep"]
    kw = dict(uvw_m=g["uvw"], freq_hz=g["freq"], cell_rad=cell, epsilon=eps, xp=xp, plan=plan, prep=prep)
    res["grid"] = timer(lambda: holder.__setitem__("img", wgrid.vis2dirty(vis=vis_d, wgt=wgt_d, npix=npix, **kw)),
                        args.repeats)
    model = np.zeros((npix, npix))
    model[np.random.default_rng(1).integers(0, npix, (2, 500)).tolist()] = 1.0
    model_d = xp.asarray(model)
    res["degrid"] = timer(lambda: holder.__setitem__("v", wgrid.dirty2vis(image=model_d, **kw)), args.repeats)
    # the kernels alone, every plane, beside the FFTs
    ops = wgrid._backend_ops(xp, plan, prep)
    ctype = ops[3]
    vals = (vis_d.ravel()[prep.index] * wgt_d.ravel()[prep.index]).astype(ctype)
    grid = xp.zeros((plan.ngrid, plan.ngrid), ctype)

    def kernels_only():
        for j in range(plan.nplanes):
            ops[1](plan, prep, vals, j, grid)

    res["grid_kernels"] = timer(kernels_only, args.repeats)
    res["fft_plane"] = timer(lambda: xp.fft.ifft2(grid), args.repeats)
    for key in ("grid", "degrid"):
        res[key]["vis_per_s"] = nvis / res[key]["median_s"]
    res["grid_kernels"]["vis_per_s"] = nvis / res["grid_kernels"]["median_s"]
    model_ops = gridder_model(nvis=nvis, plan=plan)
    t = res["grid"]["median_s"]
    res["gridder_model"] = {**model_ops, "achieved_gb_per_s": model_ops["bytes"] / t / 1e9,
                            "achieved_gflop_per_s": model_ops["flops"] / t / 1e9}
    print("gridding", res["grid"], "kernels", res["grid_kernels"], flush=True)
    save()

    t0 = time.perf_counter()
    ref = wg.vis2dirty(uvw=g["uvw"], freq=g["freq"], vis=g["vis"], wgt=g["wgt"], npix_x=npix, npix_y=npix,
                       pixsize_x=cell, pixsize_y=cell, epsilon=eps, do_wgridding=True, divide_by_n=False,
                       nthreads=nthreads, flip_v=True).T
    res["ducc0_grid"] = {"wall_s": time.perf_counter() - t0, "runs": 1, "warm_up": False, "nthreads": nthreads}
    res["ducc0_grid"]["vis_per_s"] = nvis / res["ducc0_grid"]["wall_s"]
    img = holder["img"].get() if xp is not np else holder["img"]
    res["grid_vs_ducc0_rel_l2"] = float(np.linalg.norm(img - ref) / np.linalg.norm(ref))
    t0 = time.perf_counter()
    ref_v = wg.dirty2vis(uvw=g["uvw"], freq=g["freq"], dirty=model.T.copy(), pixsize_x=cell, pixsize_y=cell,
                         epsilon=eps, do_wgridding=True, divide_by_n=False, nthreads=nthreads, flip_v=True)
    res["ducc0_degrid"] = {"wall_s": time.perf_counter() - t0, "runs": 1, "warm_up": False, "nthreads": nthreads}
    res["ducc0_degrid"]["vis_per_s"] = nvis / res["ducc0_degrid"]["wall_s"]
    v = holder["v"].get() if xp is not np else holder["v"]
    res["degrid_vs_ducc0_rel_l2"] = float(np.linalg.norm(v - ref_v) / np.linalg.norm(ref_v))
    print("vs ducc0", res["grid_vs_ducc0_rel_l2"], res["degrid_vs_ducc0_rel_l2"], flush=True)
    del holder["v"], vals, grid, prep, kw, ops

    # 3. Högbom on one active set
    dirty = ref / float(np.sum(g["wgt"], dtype=np.float64))
    yy, xx = np.mgrid[-npix:npix, -npix:npix]
    psf = np.exp(-(xx**2 + yy**2) / 8.0)
    amp = np.abs(dirty)
    stop = float(np.partition(amp.ravel(), -200_000)[-200_000])
    out = {}
    for name, mod in (("twin", np), ("device", xp)):
        if name == "device" and xp is np:
            continue
        r, p = mod.asarray(dirty), mod.asarray(psf)

        def run():
            m = mod.zeros((npix, npix))
            out[name] = clean.minor_cycle(residual=r, psf=p, model=m, gain=0.1, stop_jy=stop, niter=1000, xp=mod)

        res[f"hogbom_{name}"] = (timer if mod is xp else Timer(np))(run, max(1, args.repeats // 2))
        res[f"hogbom_{name}"]["components"] = out[name]
    print("hogbom", {k: v for k, v in res.items() if k.startswith("hogbom")}, flush=True)
    save()

    # 4. the full clean
    if not args.skip_clean:
        icfg = cfg.image.model_copy(update={"npix": npix})
        kwc = dict(uvw_m=g["uvw"], freq_hz=g["freq"], vis=g["vis"], wgt=g["wgt"], npix=npix, cell_rad=cell, cfg=icfg,
                   nthreads=nthreads)
        del vis_d, wgt_d, model_d
        holder.clear()
        pool = xp.get_default_memory_pool() if xp is not np else None
        if pool is not None:
            pool.free_all_blocks()
        t0 = time.perf_counter()
        dev = clean_image(backend="gpu" if xp is not np else "twin", **kwc)
        t_dev = time.perf_counter() - t0
        # what CuPy's pool holds after the clean (blocks in use plus freed ones it keeps for
        # reuse), not a measured peak: the pool gives nothing back on its own (only on
        # free_all_blocks or an out-of-memory retry), so this bounds the clean's peak use from
        # above, rounded up by the pool's block sizes and fragmentation
        held = pool.total_bytes() / 2**30 if pool is not None else None
        t0 = time.perf_counter()
        cpu = clean_image(backend="cpu", **kwc)
        t_cpu = time.perf_counter() - t0
        noise = float(mad_std(cpu.residual))
        diff = dev.restored - cpu.restored
        res["clean"] = {"device_s": t_dev, "cpu_s": t_cpu, "cpu_threads": nthreads,
                        "device_pool_held_after_gib": held,
                        "16_gib_minus_pool_held": None if held is None else 16.0 - held,
                        "components_device": dev.iterations, "components_cpu": cpu.iterations,
                        "major_cycles_device": dev.major_cycles, "major_cycles_cpu": cpu.major_cycles,
                        "restored_diff_rms_over_noise": float(np.sqrt(np.mean(diff**2)) / noise),
                        "restored_diff_max_over_noise": float(np.max(np.abs(diff)) / noise)}
        print("clean", res["clean"], flush=True)
    save()
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The whole DSA-110 group chain — read, flag, calibrate (model, solve, apply, subtraction),
image (rephase/Stokes I, weights, gridding, CLEAN, restore, primary beam), write — with every
stage on its device path, against the CPU chain on the same simulated group (96 antennas,
64 channels, 6 integrations, RFI, a 3 Jy calibrator and a 2 Jy source subtracted, 25 faint
sources).

In CI the device path runs as array code on numpy: backend "twin" for each stage
(`contimg.device.backend.TWIN`, numpy standing in for cupy, so every ``xp is not np`` branch
— and the group's one upload, kept between the stages — is taken); the image stage's "twin"
is contimg's w-stacking gridder and Högbom on the host. The `gpu`-marked test runs the same
body with backend "gpu" on a device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contimg.imaging.restore import FIT_HALF_BOX
from contimg.io.store import read_zarr


def _run(base: Path, cfg, group, catalogue, mode: str):
    from contimg.pipeline.stages import STAGES, GroupWork, run_stage

    c = cfg.model_copy(update={s: getattr(cfg, s).model_copy(update={"backend": mode})
                               for s in ("flag", "calibrate", "image")})
    work = GroupWork(group=group, root=base / mode, catalogue=catalogue)
    for stage in STAGES:
        run_stage(stage, work, c)
    return work


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from contimg.config import load_config
    from contimg.io.naming import group_files, scan_folder
    from contimg.sim import simulate
    from contimg.sky.catalogue import load_catalogue

    base = tmp_path_factory.mktemp("device_chain")
    cfg = load_config("test", use_env=False, overrides={
        "simulate": {"n_times": 6},
        "image": {"npix": 256, "cell_arcsec": 20.0, "niter": 200, "products": ["restored", "pbcor"]},
        "sky": {"catalogue": str(base / "in" / "catalogue.csv")}})
    simulate(base / "in", n_groups=1, cfg=cfg.simulate)
    group = group_files(scan_folder(base / "in"), tolerance_s=60)[0]
    catalogue = load_catalogue(base / "in" / "catalogue.csv")
    cpu = _run(base, cfg, group, catalogue, "cpu")
    return base, cfg, group, catalogue, cpu


def _visibility_bytes(work) -> int:
    """The group's visibility bytes (complex64), from what the chain uploaded or the files."""
    return work.meta["transfer_bytes"]["by_label"]["h2d:vis"]


def _compare(cpu, dev, *, base: Path):
    """The device chain's products against the CPU chain's; returns the traffic."""
    # flag: the device path ran (flag_group records it), the same flags but for a few samples
    assert read_zarr(dev.out_dir / "flags.zarr")[1]["backend"] == "gpu"
    assert read_zarr(cpu.out_dir / "flags.zarr")[1]["backend"] == "cpu"
    assert abs(dev.flag_fraction - cpu.flag_fraction) <= 1e-3
    assert 0.05 < cpu.flag_fraction < 0.5  # RFI was found
    # calibrate: the same gains (StEFCal on the device path's sums) and subtraction scales
    g_cpu, _ = read_zarr(cpu.out_dir / "cal.zarr")
    g_dev, _ = read_zarr(dev.out_dir / "cal.zarr")
    np.testing.assert_array_equal(g_dev["flags"], g_cpu["flags"])
    assert np.abs(g_dev["gains"] - g_cpu["gains"]).max() <= 1e-4
    assert [s.name for s in dev.subtracted] == [s.name for s in cpu.subtracted] and len(cpu.subtracted) == 2
    np.testing.assert_allclose([s.scale for s in dev.subtracted], [s.scale for s in cpu.subtracted], rtol=1e-5)
    # image: the restored image to 1e-3 of its peak (contimg's gridder against ducc0 at epsilon
    # 1e-4, CLEAN on images that differ at that level), noise and beam to 1 %
    a, b = cpu.imgs, dev.imgs
    peak = float(a.images["restored"].max())
    assert peak > 2.5  # the subtracted 3 Jy calibrator, restored analytically
    assert np.abs(b.images["restored"] - a.images["restored"]).max() <= 1e-3 * peak
    np.testing.assert_allclose(b.images["pb"], a.images["pb"], rtol=0, atol=1e-5)
    assert b.noise_jy == pytest.approx(a.noise_jy, rel=0.01)
    np.testing.assert_allclose(b.beam_rad[:2], a.beam_rad[:2], rtol=0.01)
    assert b.stats["n_vis"] == pytest.approx(a.stats["n_vis"], rel=1e-3)
    # fluxes: forced photometry of the catalogue's sources, within a tenth of the noise
    fa = {p["source"]: p["flux_jy"] for p in cpu.photometry}
    fb = {p["source"]: p["flux_jy"] for p in dev.photometry}
    assert len(fa) >= 10 and fa.keys() == fb.keys()
    for name in fa:
        assert abs(fb[name] - fa[name]) <= 0.1 * a.noise_jy + 1e-3 * abs(fa[name]), name
    # the FITS products exist for both
    assert all(Path(p).is_file() for p in dev.products) and len(dev.products) == len(cpu.products) == 2
    return dev.meta["transfer_bytes"]


def _check_traffic(cpu, dev):
    """The CPU chain moves nothing; the device chain uploads the group once (vis, flags as bits,
    the weights as one float32 per channel: the simulator's nsamples are uniform, which the
    reader keeps as a broadcast view) and brings back little: the flags once, as bits (flag_group
    returns them on the host and keeps them on the device), their statistics (counted on the
    device), the weight sums and the images."""
    assert cpu.meta["transfer_bytes"] == {"h2d": 0, "d2h": 0, "by_label": {}}
    t = dev.meta["transfer_bytes"]
    vis_bytes = _visibility_bytes(dev)
    labels = t["by_label"]
    summary = read_zarr(dev.out_dir / "flags.zarr")[0]
    nchan, ntime = summary["per_channel"].size, summary["per_time"].size
    n_cross = int(np.isfinite(summary["per_baseline"]).sum())
    assert labels["h2d:weights"] == 4 * nchan
    assert labels["h2d:flags"] == labels["d2h:flags (flag_group)"] == -(-vis_bytes // 64)  # bits, once each way
    assert labels["d2h:flag statistics"] == 8 * (n_cross + ntime * nchan)  # int64 counts, per baseline and cell
    assert set(labels) == {"h2d:vis", "h2d:weights", "h2d:flags", "d2h:flags (flag_group)", "d2h:flag statistics",
                           "d2h:weight sums", "d2h:psf (beam fit)", "d2h:images"}
    assert labels["d2h:psf (beam fit)"] == (2 * FIT_HALF_BOX + 1) ** 2 * 4  # the box the fit reads, float32
    # (the primary beam is made on the host: it does not cross)
    came = [k for k in ("dirty", "psf", "model", "residual", "restored") if k in dev.imgs.images]
    assert {"residual", "restored"} <= set(came) and came == [k for k in came if k in cpu.imgs.images]
    assert labels["d2h:images"] == sum(dev.imgs.images[k].nbytes for k in came)
    assert t["h2d"] <= 1.05 * vis_bytes
    assert t["d2h"] <= 0.25 * vis_bytes


def test_device_chain_as_array_code_equals_the_cpu_chain(simulated):
    base, cfg, group, catalogue, cpu = simulated
    dev = _run(base, cfg, group, catalogue, "twin")
    _compare(cpu, dev, base=base)
    _check_traffic(cpu, dev)


@pytest.mark.gpu
def test_device_chain_on_the_gpu_equals_the_cpu_chain(simulated):
    base, cfg, group, catalogue, cpu = simulated
    dev = _run(base, cfg, group, catalogue, "gpu")
    _compare(cpu, dev, base=base)
    _check_traffic(cpu, dev)

"""Shared fixtures: one small simulation (2 groups, calibrator in the first) and one pipeline
run over it, made once per session; tests get paths and read-only results."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import contimg  # noqa: F401  (configures astropy offline, as the package does)
from astropy.utils import iers

iers.conf.auto_download = False
iers.conf.auto_max_age = None


def pytest_sessionstart(session):
    """Stop at once, saying why, when the temporary folder's disk is nearly full: the service
    (rightly) starts no new group below ``service.disk_critical_fraction`` free, so the
    service tests would wait for space instead of failing."""
    import tempfile

    from contimg.config import ServiceConfig

    usage = shutil.disk_usage(tempfile.gettempdir())
    need = ServiceConfig().disk_critical_fraction * usage.total + 6 * 2**30  # the suite peaked at 5.6 GiB of tmp folders (CI, 2026-12-06)
    if usage.free < need:
        pytest.exit(f"{tempfile.gettempdir()}: {usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.0f} GiB; "
                    f"the tests need {need / 2**30:.1f} GiB (the service holds new groups below "
                    f"{ServiceConfig().disk_critical_fraction:.0%} free)", returncode=3)


def pytest_collection_modifyitems(config, items):
    try:
        import cupy  # noqa: F401

        have_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001
        have_gpu = False
    if not have_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA device and cupy")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def test_config():
    from contimg.config import load_config

    return load_config("test", use_env=False)


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory, test_config) -> Path:
    from contimg.sim import simulate

    out = tmp_path_factory.mktemp("sim")
    simulate(out, n_groups=2, cfg=test_config.simulate)
    return out


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, sim_dir, test_config):
    """(results, exit code, root) of `run_batch` over the two simulated groups."""
    from contimg.service.batch import run_batch

    root = tmp_path_factory.mktemp("root")
    results, code = run_batch(sim_dir, root=root, cfg=test_config)
    return results, code, root


@pytest.fixture(scope="session")
def processed(tmp_path_factory):
    """(base, group id, config) of one small group without RFI (6 integrations), processed with
    the simulated sky as catalogue: solved on its transiting calibrator, applied, imaged.
    The interop and calibration-table tests export it."""
    from contimg.config import load_config
    from contimg.service.batch import run_batch
    from contimg.sim import simulate

    base = tmp_path_factory.mktemp("processed")
    cfg = load_config("test", use_env=False, overrides={
        "simulate": {"n_times": 6, "rfi": False},
        "image": {"npix": 512, "cell_arcsec": 10.0, "niter": 300, "products": ["restored"]},
        "sky": {"catalogue": str(base / "in" / "catalogue.csv")}})
    simulate(base / "in", n_groups=1, cfg=cfg.simulate)
    results, code = run_batch(base / "in", root=base / "root", cfg=cfg)
    assert code == 0
    return base, results[0].group_id, cfg


@pytest.fixture
def copy_group(tmp_path, sim_dir):
    """Copy the first simulated group's 16 files into a fresh folder; returns (folder, files)."""
    from contimg.io.naming import group_files, scan_folder

    group = group_files(scan_folder(sim_dir), tolerance_s=60)[0]
    dest = tmp_path / "in"
    dest.mkdir()
    files = {sb: Path(shutil.copy(p, dest / Path(p).name)) for sb, p in group.files.items()}
    return dest, files


REGRESS_KEY = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The regression benchmark's table (tests/test_bench_regress.py), so CI's log records it."""
    lines = config.stash.get(REGRESS_KEY, None)
    if lines:
        terminalreporter.section("benchmark")
        for line in lines:
            terminalreporter.write_line(line)

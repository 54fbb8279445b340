"""Bad input: the group fails (or is flagged) with the file named; other groups go on."""

import json
import shutil
import subprocess
import sys

import pytest

from contimg.config import load_config
from contimg.io.naming import group_files, scan_folder
from contimg.service.batch import run_batch

CHEAP_IMAGE = {"image": {"npix": 256, "cell_arcsec": 20.0, "niter": 50, "products": ["restored"]}}


@pytest.fixture
def two_groups_one_truncated(tmp_path, sim_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    groups = group_files(scan_folder(sim_dir), tolerance_s=60)
    for g in groups:
        for path in g.files.values():
            shutil.copy(path, folder / path.name)
    bad = folder / groups[1].files[3].name
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    return folder, groups, bad


def test_fail_mode_fails_the_group_and_names_the_file(tmp_path, two_groups_one_truncated):
    folder, groups, bad = two_groups_one_truncated
    cfg = load_config("test", use_env=False, overrides={**CHEAP_IMAGE, "grouping": {"on_bad_subband": "fail"}})
    results, code = run_batch(folder, root=tmp_path / "root", cfg=cfg)
    by_id = {r.group_id: r for r in results}
    assert by_id[groups[0].group_id].status == "completed"
    failed = by_id[groups[1].group_id]
    assert failed.status == "failed" and failed.stage == "read" and str(bad) in failed.error
    assert code == 2
    report = json.loads((tmp_path / "root" / "failures.json").read_text())
    assert [r["group_id"] for r in report] == [groups[1].group_id] and str(bad) in report[0]["error"]


def test_flag_mode_flags_the_subband_and_names_the_file(tmp_path, two_groups_one_truncated):
    folder, groups, bad = two_groups_one_truncated
    cfg = load_config("test", use_env=False, overrides=CHEAP_IMAGE)
    results, code = run_batch(folder, root=tmp_path / "root", cfg=cfg)
    assert code == 0
    flagged = next(r for r in results if r.group_id == groups[1].group_id)
    assert flagged.status == "completed" and any(str(bad) in p for p in flagged.problems)
    from contimg.state.products import ProductsDB

    db = ProductsDB(tmp_path / "root" / "state" / "products.sqlite3")
    row = next(g for g in db.groups() if g["group_id"] == groups[1].group_id)
    assert str(bad) in json.loads(row["problems"])[0] and row["n_subbands"] == 15
    db.close()


def test_nothing_to_run_exits_1(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "contimg.cli", "run", str(tmp_path / "empty"), "--root",
                           str(tmp_path / "root"), "--config", "test"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no subband files" in json.loads((tmp_path / "root" / "failures.json").read_text())[0]["error"]


def test_cli_run_reports_partial_failure(tmp_path, two_groups_one_truncated):
    folder, groups, bad = two_groups_one_truncated
    cfg = tmp_path / "cheap.toml"
    cfg.write_text('base = "test"\n[grouping]\non_bad_subband = "fail"\n'
                   '[image]\nnpix = 256\ncell_arcsec = 20.0\nniter = 50\nproducts = ["restored"]\n')
    proc = subprocess.run([sys.executable, "-m", "contimg.cli", "run", str(folder), "--root", str(tmp_path / "root"),
                           "--config", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "failed" in proc.stdout and bad.name in proc.stdout


def test_bad_config_is_refused_at_start(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[image]\nweighting = "robust"\n')
    proc = subprocess.run([sys.executable, "-m", "contimg.cli", "run", str(tmp_path), "--root", str(tmp_path / "r"),
                           "--config", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 1 and "image.weighting" in proc.stderr


def test_full_disk_stops_a_batch_run_instead_of_waiting(tmp_path, sim_dir):
    """A batch run whose root's disk is below ``service.disk_critical_fraction`` free starts no
    group (the service would wait for space; a batch run has nobody to free it): it stops at
    once, exit 1, every group left pending with the reason and the free space, as
    ``shutil.disk_usage`` reads it."""
    usage = shutil.disk_usage(tmp_path)
    critical = min(0.999, usage.free / usage.total + 0.01)  # just above what is free now
    cfg = load_config("test", use_env=False, overrides={**CHEAP_IMAGE, "service": {"disk_critical_fraction": critical}})
    results, code = run_batch(sim_dir, root=tmp_path / "root", cfg=cfg)
    assert code == 1 and len(results) == 2
    for r in results:
        assert r.status == "pending" and "disk critical" in r.error and "free space and run again" in r.error
        assert f"{usage.free / 2**30:.0f}" in r.error or f"{usage.free / 2**30:.1f}" in r.error  # GiB free
    report = json.loads((tmp_path / "root" / "failures.json").read_text())
    assert {r["group_id"] for r in report} == {r.group_id for r in results}

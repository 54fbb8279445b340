"""The command line's rough edges a new user hit: a root that is a file, a mistyped root for a
read-only command, a bad environment override, config names and paths from any folder, the
words of `contimg status`, QA gate failures in `run`'s summary and exit code, and the
configuration a root remembers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contimg.cli import main
from contimg.config import ConfigError, load_config

# one small group (4 integrations, no RFI) imaged small: a whole `run` takes a few seconds
CHEAP = """base = "test"
[simulate]
n_times = 4
rfi = false
n_faint_sources = 5
[image]
npix = 256
cell_arcsec = 20.0
niter = 50
products = ["restored"]
[runtime]
nthreads = 1
[qa]
plots = false
"""
STAGES = {"read", "flag", "calibrate", "image", "write"}


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("CONTIMG__")]:
        monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def cheap(tmp_path_factory):
    """(the cheap config's path, a folder with one simulated group)."""
    from contimg.sim import simulate

    base = tmp_path_factory.mktemp("edges")
    cfg_path = base / "cheap.toml"
    cfg_path.write_text(CHEAP)
    simulate(base / "in", n_groups=1, cfg=load_config(cfg_path, use_env=False).simulate)
    return cfg_path, base / "in"


@pytest.fixture(scope="module")
def run_root(cheap, tmp_path_factory):
    """A root that `contimg run` processed the group into (read-only for the tests)."""
    cfg_path, src = cheap
    root = tmp_path_factory.mktemp("edges-root") / "root"
    assert main(["run", str(src), "--root", str(root), "--config", str(cfg_path)]) == 0
    return root


def _gid(root: Path) -> str:
    return json.loads((root / "summary.json").read_text())[0]["group_id"]


# 1 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "serve", "replay", "demo"])
def test_a_root_that_is_a_file_is_one_line_and_exit_1(tmp_path, capsys, command):
    (tmp_path / "in").mkdir()
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for root in (afile, afile / "sub"):
        argv = {"run": ["run", str(tmp_path / "in")], "serve": ["serve"], "replay": ["replay", str(tmp_path / "in")],
                "demo": ["demo", "--exit-when-done", "--no-browser"]}[command]
        assert main(argv + ["--root", str(root), "--config", "test"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"contimg: --root {root}") and "is a file, not a folder" in err[0]
    assert afile.read_text() == "not a folder"


# 2 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["status"], ["status", "--json"],
    ["export-ms", "2026-01-01T00:00:00", "--out", "{tmp}/x.ms"],
    ["export-uv", "2026-01-01T00:00:00", "--out", "{tmp}/x.uvh5"],
    ["export-cal", "2026-01-01T00:00:00", "--out", "{tmp}/x.calh5"],
    ["lightcurve", "3C286"],
    ["reprocess", "2026-01-01T00:00:00"]], ids=lambda argv: "-".join(argv[:2]).replace("2026-01-01T00:00:00", "gid"))
def test_read_only_commands_create_nothing_on_a_mistyped_root(tmp_path, capsys, argv):
    argv = [a.format(tmp=tmp_path) for a in argv]
    missing, empty = tmp_path / "typo", tmp_path / "empty"
    empty.mkdir()
    for root in (missing, empty):
        assert main(argv + ["--root", str(root)]) == 1
        err = capsys.readouterr().err
        assert f"contimg: no contimg root at {root} (no {root / 'state'})" in err
    assert not missing.exists() and list(empty.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no output either


# 3 ---------------------------------------------------------------------------------------------
def test_a_bad_environment_override_names_the_variable(tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    monkeypatch.setenv("CONTIMG__IMAGE__NITER", "abc")
    assert main(["run", str(tmp_path / "in"), "--root", str(tmp_path / "r"), "--config", "test"]) == 1
    err = capsys.readouterr().err
    assert "contimg: CONTIMG__IMAGE__NITER=abc: image.niter:" in err and "test.toml" not in err
    monkeypatch.setenv("CONTIMG__IMAGE__NITER", "17")
    monkeypatch.setenv("CONTIMG__IMAGE__NPIXX", "10")
    with pytest.raises(ConfigError, match=r"^CONTIMG__IMAGE__NPIXX=10: image\.npixx"):
        load_config("test")
    monkeypatch.delenv("CONTIMG__IMAGE__NPIXX")
    bad = tmp_path / "bad.toml"  # the file's own mistakes are still the file's
    bad.write_text('base = "test"\n[image]\nweighting = "robust"\n')
    with pytest.raises(ConfigError, match=rf"^{bad}: image\.weighting"):
        load_config(bad)


# 4 ---------------------------------------------------------------------------------------------
def test_config_names_and_paths_work_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test").mkdir()  # a folder named like a packaged config is not the config
    assert load_config("test", use_env=False).name == "test"
    assert load_config("configs/quick.toml", use_env=False).name == "quick"  # the checkout's path, from elsewhere
    sub = tmp_path / "site"
    sub.mkdir()
    (sub / "common.toml").write_text('base = "test"\n[image]\nniter = 7\n')
    (sub / "mine.toml").write_text('base = "common.toml"\nname = "mine"\n')  # base: next to the file naming it
    assert load_config("site/mine.toml", use_env=False).image.niter == 7
    assert load_config(sub / "mine.toml", use_env=False).name == "mine"  # absolute
    # the same through the command line, from a folder that has no configs/
    out = tmp_path / "sim"
    assert main(["simulate", str(out), "--config", "configs/test.toml", "--antennas", "4", "--times", "1",
                 "--no-rfi"]) == 0
    assert len(list(out.glob("*.hdf5"))) == 16
    assert main(["simulate", str(out), "--config", "configs/tset.toml"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "configs" / "tset.toml") in err and "dsa110, quick, test" in err
    assert main(["simulate", str(out), "--config", "tset"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "tset") in err and "dsa110, quick, test" in err


# 5 ---------------------------------------------------------------------------------------------
def test_status_speaks_an_operators_words(run_root, capsys):
    assert main(["status", "--root", str(run_root)]) == 0
    out = capsys.readouterr().out
    for word in ("gc_max", "loop_lag", "drain", "rss"):
        assert word not in out, out
    stage_line = next(line for line in out.splitlines() if line.startswith("median stage time: "))
    names = {item.split()[0] for item in stage_line.removeprefix("median stage time: ").split(", ")}
    assert names == STAGES
    assert "after each group: catalogue and mosaic update" in out  # the service's after-group hook, timed
    assert "batch (stops when the queue is empty)" in out
    assert "event-loop delay (max)" in out and "garbage-collection pause (max)" in out
    assert f"configuration: test ({run_root / 'state' / 'config.json'})" in out
    assert main(["status", "--root", str(run_root), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["stage_median_s"]) == STAGES
    assert set(doc["pauses_max_ms"]) == {"event_loop_delay", "garbage_collection"}


# 6 ---------------------------------------------------------------------------------------------
def test_a_qa_gate_failure_is_named_and_exits_3(cheap, tmp_path, capsys):
    cfg_path, src = cheap
    strict = cfg_path.parent / "strict.toml"
    strict.write_text('base = "cheap.toml"\n[qa]\nmin_dynamic_range = 1e9\n')  # no image passes
    root = tmp_path / "root"
    assert main(["run", str(src), "--root", str(root), "--config", str(strict)]) == 3
    out = capsys.readouterr().out
    gid = _gid(root)
    assert f"{gid}  completed" in out and "QA FAILED: image gate (dynamic range" in out
    assert f"QA: 1 of 1 group(s) failed a gate: {gid} (image)" in out
    summary = json.loads((root / "summary.json").read_text())
    assert summary[0]["qa_passed"] is False and not summary[0]["gates"]["image"]["passed"]
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "exit codes:" in help_text and "3  every group completed, but some failed a QA gate" in help_text


# 7 ---------------------------------------------------------------------------------------------
def test_a_root_remembers_its_configuration(cheap, tmp_path, capsys, caplog):
    from astropy.io import fits

    cfg_path, src = cheap
    root = tmp_path / "root"
    stored_path = root / "state" / "config.json"
    assert main(["run", str(src), "--root", str(root), "--config", str(cfg_path)]) == 0
    stored = json.loads(stored_path.read_text())
    assert stored["image"]["npix"] == 256 and stored["image"]["niter"] == 50
    gid = _gid(root)
    restored = root / "products" / gid / f"{gid}.restored.fits"
    capsys.readouterr()
    # without --config: the stored one (the default dsa110 would image 4096 pixels)
    assert main(["reprocess", gid, "--root", str(root), "--from-stage", "image"]) == 0
    assert f"using the configuration stored in {stored_path}" in capsys.readouterr().err
    assert fits.getdata(restored).shape[-2:] == (256, 256)
    # another --config: refused, naming both and the way out
    assert main(["reprocess", gid, "--root", str(root), "--from-stage", "image", "--config", "test"]) == 1
    err = capsys.readouterr().err
    assert "--config test differs" in err and str(stored_path) in err and "image.npix: 256 -> 2048" in err
    assert "--force-config" in err
    other = cfg_path.parent / "other.toml"
    other.write_text('base = "cheap.toml"\n[image]\nniter = 40\n')
    assert main(["reprocess", gid, "--root", str(root), "--from-stage", "image", "--config", str(other),
                 "--force-config"]) == 0
    assert json.loads(stored_path.read_text())["image"]["niter"] == 50  # a forced reprocess stores nothing
    # the exports use it too
    assert main(["export-uv", gid, "--root", str(root), "--out", str(tmp_path / "g.uvh5")]) == 0
    assert f"using the configuration stored in {stored_path}" in capsys.readouterr().err
    # run with another config replaces it, with a warning
    with caplog.at_level("WARNING", logger="contimg"):
        assert main(["run", str(src), "--root", str(root), "--config", str(other)]) == 0
    assert any("replacing the stored configuration" in r.getMessage() and "image.niter: 50 -> 40" in r.getMessage()
               for r in caplog.records)
    assert json.loads(stored_path.read_text())["image"]["niter"] == 40
    assert not list(stored_path.parent.glob(".config.json*"))  # no temporary left behind


def test_an_unreadable_subband_is_reported_once(tmp_path):
    """A subband file of random bytes: the run's log names the file once (it printed 'subband
    sbNN is missing' 15 times, the whole line 3 times) with the count of missing subbands."""
    import os
    import subprocess
    import sys

    incoming = tmp_path / "in"
    incoming.mkdir()
    bad = incoming / "2026-03-21T10:00:00_sb03.hdf5"
    bad.write_bytes(os.urandom(4096))
    done = subprocess.run([sys.executable, "-m", "contimg.cli", "run", str(incoming), "--root", str(tmp_path / "root"),
                           "--config", "test"], capture_output=True, text=True, timeout=300)
    assert done.returncode in (1, 2), done.stderr[-2000:]
    assert done.stderr.count(str(bad)) == 1, done.stderr[-3000:]
    assert "is missing" not in done.stderr
    assert "15 of 16 subbands missing" in done.stderr

"""`contimg run FILE` (contimg.pipeline.generic) as a new user meets it: progress lines while it
works, the reference antenna it chose and why, a line-free channel range for the continuum
image, clean field names for the files (the file's names kept), on the small simulated group the
interop tests export and on the VLA NGC5921 data set."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from contimg.config import ConfigError, load_config
from contimg.pipeline.generic import (
    GenericInputError,
    chan_text,
    choose_refant,
    clean_field_names,
    continuum_channels,
    read_observation,
)

ROOT = Path(__file__).resolve().parents[1]


def _ngc5921() -> Path:
    spec = importlib.util.spec_from_file_location("casa_ngc5921", ROOT / "tools/casa_ngc5921.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.DATA


# --- units --------------------------------------------------------------------------------------


def test_clean_field_names_drop_aips_qualifiers_and_never_collide():
    # the names pyuvdata reports for NGC5921's UVFITS SU table, with the calibrators they match
    got = clean_field_names([("1331+30500002_0", "1331+305"), ("1445+09900002_0", "1445+099"), ("N5921_2", "")])
    assert got == ["1331+305", "1445+099", "N5921"]
    # two fields of one source (AIPS qualifiers 2 and 3), and one differing only in case: counters
    assert clean_field_names([("N5921_2", ""), ("N5921_3", ""), ("n5921", "")]) == ["N5921", "N5921-2", "n5921-3"]
    # a counter never lands on a name already taken
    assert clean_field_names([("X_1", ""), ("X-2", ""), ("X_3", "")]) == ["X", "X-2", "X-3"]
    # a calibrator known by another name keeps it; odd characters; nothing left
    assert clean_field_names([("3C286", "1331+305"), ("my field/1", ""), ("_0", "")]) == ["3C286", "my_field_1",
                                                                                          "field2"]


def test_channel_text_is_casa_like():
    assert chan_text([0, 1, 2, 3, 4, 5, 50, 51, 62]) == "0~5;50~51;62"
    assert chan_text([]) == ""


@pytest.mark.parametrize("value, complaint", [
    ([[5, 0]], "0 <= first <= last"), ([[-1, 3]], "0 <= first <= last"), ([], "at least one"),
    ("0~5;50~62", "valid list"), ([[0, 5, 9]], "at most 2 items")])
def test_continuum_channels_refused_with_the_key_named(tmp_path, value, complaint):
    path = tmp_path / "c.toml"
    path.write_text(f"base = \"dsa110\"\n[generic]\ncontinuum_channels = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match="generic.continuum_channels") as err:
        load_config(path, use_env=False)
    assert complaint in str(err.value) and str(path) in str(err.value)
    path.write_text("base = \"dsa110\"\n[generic]\ncontinuum_channels = [[0, 5], [50, 62]]\nrefant = \"VLA:N2\"\n")
    cfg = load_config(path, use_env=False)
    assert cfg.generic.continuum_channels == [(0, 5), (50, 62)] and cfg.generic.refant == "VLA:N2"
    assert load_config("dsa110", use_env=False).generic.continuum_channels is None  # default: every channel


# --- the VLA NGC5921 file: names, channels and the reference antenna --------------------------------


@pytest.fixture(scope="module")
def ngc5921():
    data = _ngc5921()
    if not data.is_file():
        pytest.skip(f"{data} not found (set CONTIMG_SHARED to the shared data folder)")
    return read_observation(data)


def test_ngc5921_field_names(ngc5921):
    assert {f.name: f.label for f in ngc5921.fields.values()} == {
        "1331+30500002_0": "1331+305", "1445+09900002_0": "1445+099", "N5921_2": "N5921"}


def test_ngc5921_continuum_channels(ngc5921):
    idx = continuum_channels(ngc5921, [(0, 5), (50, 62)])
    assert list(ngc5921.file_channels(idx)) == [*range(6), *range(50, 63)]
    np.testing.assert_array_equal(ngc5921.freq_hz[idx], np.sort(ngc5921.freq_hz[idx]))
    assert continuum_channels(ngc5921, None) is None
    with pytest.raises(GenericInputError, match=r"generic.continuum_channels \[60, 70\]: the file has channels 0 to 62"):
        continuum_channels(ngc5921, [(0, 5), (60, 70)])


def test_ngc5921_reference_antenna_and_why(ngc5921):
    """The DSA-110 default ("24", fallbacks "25".."28") is not a VLA antenna: the antenna with the
    most unflagged data, and the reason says so; a configured one is taken and named."""
    obs = ngc5921
    cfg = load_config("dsa110", use_env=False)
    name, why = choose_refant(obs, cfg)
    good = (~obs.flags).sum(axis=(1, 2))
    counts = np.bincount(obs.ant1, good, minlength=obs.antenna_names.size) + np.bincount(
        obs.ant2, good, minlength=obs.antenna_names.size)
    assert name == obs.antenna_names[np.argmax(counts)]
    assert "most unflagged data" in why and "generic.refant is not set" in why
    assert "'24', '25', '26', '27', '28' not in the file" in why

    def with_(**over):
        return load_config("dsa110", use_env=False, overrides=over)

    assert choose_refant(obs, with_(calibrate={"refant": "VLA:N2"})) == ("VLA:N2", "calibrate.refant 'VLA:N2'")
    name, why = choose_refant(obs, with_(calibrate={"refant_fallbacks": ["VLA:W9", "VLA:N2"]}))
    assert name == "VLA:W9" and why == "calibrate.refant_fallbacks 'VLA:W9' (before it: '24' not in the file)"
    # generic.refant wins over calibrate.refant
    assert choose_refant(obs, with_(calibrate={"refant": "VLA:N2"}, generic={"refant": "VLA:E5"}))[0] == "VLA:E5"
    with pytest.raises(GenericInputError, match="generic.refant 'VLA:Z9' is not an antenna of the file"):
        choose_refant(obs, with_(generic={"refant": "VLA:Z9"}))
    # an antenna flagged throughout is passed over, and said so
    n2 = int(np.flatnonzero(obs.antenna_names == "VLA:N2")[0])
    flags = obs.flags.copy()
    flags[(obs.ant1 == n2) | (obs.ant2 == n2)] = True
    flagged = dataclasses.replace(obs, flags=flags)
    name, why = choose_refant(flagged, with_(calibrate={"refant": "VLA:N2", "refant_fallbacks": ["VLA:W9"]}))
    assert name == "VLA:W9" and "'VLA:N2' flagged throughout" in why
    with pytest.raises(GenericInputError, match="generic.refant 'VLA:N2' is flagged throughout"):
        choose_refant(flagged, with_(generic={"refant": "VLA:N2"}))


# --- the whole command on the small simulated group ---------------------------------------------------

FIRST, SECOND = "1156+31400002_0", "1156+314_1"  # one calibrator, two AIPS-style fields: same clean name
CHANNELS = [[0, 7], [20, 27]]


@pytest.fixture(scope="module")
def filemode(processed, tmp_path_factory):
    """The raw group exported as UVH5 with its one field split in two by time (names FIRST and
    SECOND, both the transiting 1156+314), run through `contimg run FILE` with
    ``generic.continuum_channels`` and ``generic.refant`` set; (summary, the progress log
    records, the antenna chosen, the file's frequencies)."""
    from pyuvdata import UVData

    from contimg.cli import main
    from contimg.pipeline.exports import export_ms

    base, gid, cfg = processed
    tmp = tmp_path_factory.mktemp("filemode")
    uv = UVData.from_file(str(export_ms(gid, root=base / "root", out=tmp / "g.ms", cfg=cfg)), file_type="ms")
    (cid,) = uv.phase_center_catalog
    times = np.unique(uv.time_array)
    uv.split_phase_center(cid, new_name=SECOND, new_id=int(cid) + 1,
                          select_mask=uv.time_array > times[times.size // 2 - 1])
    uv.rename_phase_center(cid, FIRST)
    path = tmp / "two_fields.uvh5"
    uv.write_uvh5(str(path))
    refant = str(uv.telescope.antenna_names[5])
    config = tmp / "filemode.toml"
    config.write_text(f'base = "test"\n[generic]\nnpix = 512\ncell_arcsec = 10.0\nrefant = "{refant}"\n'
                      f'continuum_channels = {json.dumps(CHANNELS)}\n'
                      '[image]\nniter = 300\nproducts = ["restored", "residual"]\n')
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("contimg.pipeline")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert main(["run", str(path), "--root", str(tmp / "root"), "--config", str(config)]) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    summary = json.loads((tmp / "root" / "products" / path.name / "summary.json").read_text())
    return summary, [r.getMessage() for r in records], refant, np.sort(np.asarray(uv.freq_array, float).ravel())


def _root(summary: dict) -> Path:
    return Path(summary["input"]).parent / "root"


def test_progress_lines_per_stage(filemode):
    """One line per stage while it works (stderr through logging in the CLI), each with its
    seconds and the run's elapsed seconds."""
    _, lines, _, _ = filemode
    name = "two_fields.uvh5"

    def at(prefix: str) -> int:
        hits = [i for i, x in enumerate(lines) if x.startswith(f"{name}: {prefix}")]
        assert hits, (prefix, lines)
        return hits[0]

    assert lines[0].endswith("two_fields.uvh5: reading")
    order = [at("read "), at("flagged scan 1 (1/2"), at("flagged scan 2 (2/2"),
             at("reference antenna"), at("calibrated:"), at("imaging 1156+314:"), at("imaged 1156+314:"),
             at("imaging 1156+314-2:"), at("imaged 1156+314-2:"), at("products in")]
    assert order == sorted(order)
    assert "2 fields (1156+314 = 1156+31400002_0, 1156+314-2 = 1156+314_1), 2 scans" in lines[at("read ")]
    assert "imaging channels 0~7;20~27" in lines[at("read ")]
    assert "512 x 512 pixels of 10\", channels 0~7;20~27 (16)" in lines[at("imaging 1156+314:")]
    assert "CLEAN iterations in" in lines[at("imaged 1156+314:")]
    for i in order:
        if i != at("reference antenna"):
            assert lines[i].endswith(" s elapsed)"), lines[i]


def test_refant_chosen_and_said(filemode):
    summary, lines, refant, _ = filemode
    cal = summary["calibration"]
    assert cal["refant"] == refant and cal["refant_reason"] == f"generic.refant {refant!r}"
    assert any(x.endswith(f"reference antenna {refant}: generic.refant {refant!r}") for x in lines)
    # the solves use every channel for the bandpass (calibrators are continuum sources)
    assert cal["channels"]["bandpass"] == f"0~{summary['channels'] - 1}"


def test_fields_get_clean_distinct_names(filemode):
    summary, _, _, _ = filemode
    fields = summary["fields"]
    assert {k: f["name"] for k, f in fields.items()} == {"1156+314": FIRST, "1156+314-2": SECOND}
    assert summary["calibration"]["bandpass_field"] in fields
    files = [p for f in fields.values() for p in f["files"].values()]
    assert len(set(files)) == 4
    for key, f in fields.items():
        for kind, p in f["files"].items():
            assert Path(p).name == f"two_fields.uvh5.{key}.{kind}.fits"
            h = fits.getheader(p)
            assert h["OBJECT"] == key and h["FIELDNAM"] == f["name"]


def test_continuum_channels_are_what_is_imaged(filemode):
    """With generic.continuum_channels = [[0, 7], [20, 27]] of 64: only those channels are
    imaged: the summary's channels, the FITS frequency (their weighted mean, below channel 27's,
    where the whole band's would be near channel 31.5) and bandwidth (16 channels), and the HISTORY."""
    summary, _, _, freq = filemode
    assert summary["continuum_channels"] == "0~7;20~27"
    wanted = {*range(8), *range(20, 28)}
    width = float(np.median(np.diff(freq)))
    for f in summary["fields"].values():
        assert f["channels_used"] and set(f["channels_used"]) <= wanted
        assert f["bandwidth_hz"] == pytest.approx(16 * width, rel=1e-6)
        h = fits.getheader(f["files"]["restored"])
        assert h["CDELT3"] == pytest.approx(f["bandwidth_hz"]) and h["CRVAL3"] == pytest.approx(f["freq_hz"])
        assert freq[0] <= h["CRVAL3"] <= freq[27]
        assert any("channels 0~7;20~27 of 0~63" in str(x) for x in h["HISTORY"])


# --- one pipeline: a file run is a group of the service, its state and products ------------------------


def test_file_run_is_a_group_in_the_state(filemode, capsys):
    """The file went through the service's own queue as a ``file`` group: completed in the
    ingest database, its images in the products database (one row per field and kind), its
    bandpass and gains tables registered, and `status` says all of it."""
    import sqlite3

    from contimg.cli import main

    summary, _, _, _ = filemode
    root, gid = _root(summary), summary["group_id"]
    with sqlite3.connect(root / "state" / "ingest.sqlite3") as db:
        kind, state, stage = db.execute("SELECT kind, state, processing_stage FROM ingest_queue WHERE group_id = ?",
                                        [gid]).fetchone()
        stages = [r[0] for r in db.execute("SELECT stage FROM performance_metrics WHERE group_id = ? ORDER BY id",
                                           [gid])]
    assert (kind, state, stage) == ("file", "completed", "done")
    assert [x for x in stages if x in ("read", "flag", "calibrate", "image", "write")] == [
        "read", "flag", "calibrate", "image", "write"]
    with sqlite3.connect(root / "state" / "products.sqlite3") as db:
        images = db.execute("SELECT path, field, type FROM images WHERE group_id = ? ORDER BY path", [gid]).fetchall()
        status, cal_applied = db.execute("SELECT status, cal_applied FROM ms_index WHERE group_id = ?",
                                         [gid]).fetchone()
    files = sorted((f["files"][k], name, k) for name, f in summary["fields"].items() for k in f["files"])
    assert sorted(images) == files and len(files) == 4
    assert (status, cal_applied) == ("completed", 1)
    with sqlite3.connect(root / "state" / "cal_registry.sqlite3") as db:
        tables = db.execute("SELECT cal_type, path, n_channels FROM caltables WHERE set_name = ?", [gid]).fetchall()
    assert sorted(t[0] for t in tables) == ["bandpass", "gains"]
    assert all(Path(t[1]).is_dir() for t in tables)
    assert dict((t[0], t[2]) for t in tables)["bandpass"] == summary["channels"]
    assert main(["status", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "completed 1" in out and f"image {gid}" in out
    assert f"caltable {gid}  bandpass" in out and f"caltable {gid}  gains" in out


def test_export_cal_of_a_file_run_is_pyuvdatas_calibration(filemode, tmp_path):
    """`export-cal` works after a file run. pyuvdata's uvcalibrate (an independent
    implementation) of the raw file with the exported UVCal equals contimg's calibration of the
    file (its stored flags and solutions applied again), flags included; the table names the
    file's antennas. The CASA table is written too, its ANTENNA rows the file's antennas."""
    import warnings

    from casacore import tables
    from pyuvdata import UVCal, UVData
    from pyuvdata.utils import uvcalibrate

    from contimg.cli import main
    from contimg.io.store import read_zarr
    from contimg.pipeline.filestages import _stored_cal
    from contimg.pipeline.generic import apply_calibration

    summary, _, _, _ = filemode
    root, gid = _root(summary), summary["group_id"]
    out = tmp_path / "g.calh5"
    assert main(["export-cal", gid, "--root", str(root), "--out", str(out)]) == 0
    cal = UVCal.from_file(str(out))
    uv = UVData.from_file(summary["input"])
    assert set(cal.telescope.antenna_names) == set(uv.telescope.antenna_names)
    # contimg's calibration of the file
    obs = read_observation(Path(summary["input"]))
    obs.flags[...] = read_zarr(root / "products" / gid / "flags.zarr")[0]["flags"]
    apply_calibration(obs, _stored_cal(*read_zarr(root / "products" / gid / "cal.zarr")))
    # pyuvdata's, on the same rows, channels (ascending) and polarizations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = uvcalibrate(uv, cal, inplace=False, prop_flags=True)
    cross = got.ant_1_array != got.ant_2_array
    order = np.argsort(np.asarray(got.freq_array, float).ravel())
    ip = [list(got.polarization_array).index(p) for p in obs.pols]
    v = got.data_array[cross][:, order][:, :, ip]
    f = got.flag_array[cross][:, order][:, :, ip] | obs.flags  # contimg's own flags (the flagger's) on top
    assert np.array_equal(f, obs.flags)  # every flag pyuvdata propagates from the gains, contimg has too
    ok = ~f
    scale = np.abs(obs.vis[ok]).max()
    assert np.abs(v[ok] - obs.vis[ok]).max() < 2e-5 * scale
    bcal = tmp_path / "g.bcal"
    assert main(["export-cal", gid, "--root", str(root), "--out", str(bcal)]) == 0
    with tables.table(str(bcal / "ANTENNA"), ack=False) as t:
        names = [n for n in t.getcol("NAME") if n]
    assert set(names) == set(uv.telescope.antenna_names)
    with tables.table(str(bcal / "OBSERVATION"), ack=False) as t:
        assert t.getcol("TELESCOPE_NAME")[0] == uv.telescope.name


def test_rerun_into_the_same_root_says_what_it_replaces(filemode, tmp_path, capsys):
    """Running the file again into the same root (a copy here) says what it replaces before it
    starts — when and how the earlier run ended, its images, its tables — and leaves one set:
    with fewer image kinds configured, the old residual FITS and their rows are gone, the
    tables registered once."""
    import shutil
    import sqlite3

    from contimg.cli import main

    summary, _, refant, _ = filemode
    gid = summary["group_id"]
    root = tmp_path / "root"
    shutil.copytree(_root(summary), root)
    config = tmp_path / "again.toml"
    config.write_text(f'base = "test"\n[generic]\nnpix = 256\ncell_arcsec = 20.0\nrefant = "{refant}"\n'
                      '[image]\nniter = 100\nproducts = ["restored"]\n')
    assert main(["run", summary["input"], "--root", str(root), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "processed in this root before" in x)
    assert line.startswith(f"{gid}: processed in this root before (completed at ")
    assert "processing it again replaces 4 images in the products database" in line
    assert f"calibration tables bandpass (" in line and "gains (" in line
    after = json.loads((root / "products" / gid / "summary.json").read_text())
    kept = sorted(p.name for p in (root / "products" / gid).glob("*.fits"))
    assert kept == sorted(f"{gid}.{name}.restored.fits" for name in after["fields"])
    with sqlite3.connect(root / "state" / "products.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM images WHERE group_id = ?", [gid]).fetchone()[0] == 2
    with sqlite3.connect(root / "state" / "cal_registry.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM caltables WHERE set_name = ?", [gid]).fetchone()[0] == 2
    assert all(f["npix"] == 256 for f in after["fields"].values())


def test_reprocess_a_file_group_replays_its_stored_stages(filemode, tmp_path):
    """`contimg reprocess <file> --from-stage image` works on a file group as on a DSA-110 group:
    the file is read again, its stored flags and solutions replayed (not recomputed: the metrics
    say so), the images and the summary made anew with the same fields and calibration."""
    import shutil
    import sqlite3

    from contimg.cli import main

    summary, _, _, _ = filemode
    gid = summary["group_id"]
    root = tmp_path / "root"
    shutil.copytree(_root(summary), root)
    before = (root / "products" / gid / "summary.json").stat().st_mtime_ns
    assert main(["reprocess", gid, "--root", str(root), "--from-stage", "image"]) == 0
    with sqlite3.connect(root / "state" / "ingest.sqlite3") as db:
        last = dict(db.execute("SELECT stage, replayed FROM performance_metrics WHERE group_id = ? AND "
                               "stage IN ('read', 'flag', 'calibrate', 'image', 'write') ORDER BY id DESC LIMIT 5",
                               [gid]).fetchall())
        state = db.execute("SELECT state FROM ingest_queue WHERE group_id = ?", [gid]).fetchone()[0]
    assert state == "completed"
    assert last == {"read": 0, "flag": 1, "calibrate": 1, "image": 0, "write": 0}
    after = json.loads((root / "products" / gid / "summary.json").read_text())
    assert (root / "products" / gid / "summary.json").stat().st_mtime_ns > before
    assert after["fields"].keys() == summary["fields"].keys()
    assert after["calibration"]["refant"] == summary["calibration"]["refant"]
    for name, f in after["fields"].items():
        assert f["peak_jy"] == pytest.approx(summary["fields"][name]["peak_jy"], rel=1e-4)

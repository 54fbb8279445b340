"""Calibration table export: the CASA B Jones table has the layout CASA's own tables have
(python-casacore; CI has no CASA — `tools/validate_caltable.py` runs CASA's applycal), the UVCal
reads back equal to the solution, and pyuvdata's own ``uvcalibrate`` with the exported UVCal
gives contimg's apply on a processed group."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from contimg.calibrate import GainSolution

# the main table of a caltable CASA 6.7's bandpass wrote (NGC5921): column -> (valueType, array)
CASA_COLUMNS = {"TIME": ("double", False), "FIELD_ID": ("int", False), "SPECTRAL_WINDOW_ID": ("int", False),
                "ANTENNA1": ("int", False), "ANTENNA2": ("int", False), "INTERVAL": ("double", False),
                "SCAN_NUMBER": ("int", False), "OBSERVATION_ID": ("int", False), "CPARAM": ("complex", True),
                "PARAMERR": ("float", True), "FLAG": ("boolean", True), "SNR": ("float", True),
                "WEIGHT": ("float", True)}
SUBTABLES = ("ANTENNA", "FIELD", "SPECTRAL_WINDOW", "HISTORY", "OBSERVATION")


@pytest.fixture
def solution() -> GainSolution:
    rng = np.random.default_rng(7)
    nums = np.array([0, 2, 5, 9, 40])
    freq = 1.31e9 + np.arange(16) * 244e3
    g = (1 + 0.3 * rng.normal(size=(5, 16, 2)) + 0.3j * rng.normal(size=(5, 16, 2))).astype(np.complex64)
    flags = np.zeros(g.shape, bool)
    flags[1, 3:5, 0] = True
    flags[4] = True
    snr = rng.uniform(10, 100, size=g.shape).astype(np.float32)
    return GainSolution(nums, freq, g, flags, snr, "6", 2461000.25, "3C286", "2026-03-22T07:50:50")


def test_casa_table_layout(solution, tmp_path):
    from casacore import tables

    from contimg.interop.caltable import write_casa_caltable

    path = write_casa_caltable(tmp_path / "g.bcal", sol=solution)
    assert not (tmp_path / "g.bcal.tmp").exists()
    with tables.table(str(path), ack=False) as t:
        assert t.colnames() == list(CASA_COLUMNS)
        desc = t.getdesc()
        for name, (vtype, is_array) in CASA_COLUMNS.items():
            assert desc[name]["valueType"] == vtype, name
            assert ("ndim" in desc[name]) == is_array, name
        assert desc["TIME"]["keywords"]["MEASINFO"] == {"type": "epoch", "Ref": "UTC"}
        kw = t.getkeywords()
        assert (kw["ParType"], kw["VisCal"], kw["PolBasis"]) == ("Complex", "B Jones", "LINEAR")
        assert "MSName" in kw
        assert t.info()["type"] == "Calibration" and t.info()["subType"] == "B Jones"
        for name in SUBTABLES:  # the keywords point into the table (not at the temporary name)
            assert kw[name] == f"Table: {path.resolve() / name}", name
        assert t.nrows() == 117  # one row per station: ANTENNA1 is the MS's antenna index
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        assert np.array_equal(a1, np.arange(117)) and np.all(a2 == 5)  # refant "6" is antenna number 5
        assert np.allclose(t.getcol("TIME"), (2461000.25 - 2400000.5) * 86400.0, rtol=0, atol=1e-3)
        cp, fl, snr = t.getcol("CPARAM"), t.getcol("FLAG"), t.getcol("SNR")
        assert cp.shape == (117, 16, 2) and cp.dtype == np.complex64
        assert not t.iscelldefined("WEIGHT", 0)  # as CASA's bandpass leaves it
    # the solution's antennas carry its gains, unconjugated (the convention checked with CASA)
    assert np.array_equal(cp[solution.antenna_numbers], solution.gains)
    assert np.array_equal(fl[solution.antenna_numbers], solution.flags)
    assert np.array_equal(snr[solution.antenna_numbers], solution.snr)
    others = np.setdiff1d(np.arange(117), solution.antenna_numbers)
    assert fl[others].all() and np.all(cp[others] == 1)
    with tables.table(f"{path}/ANTENNA", ack=False) as ant:
        assert ant.nrows() == 117 and ant.getcol("NAME")[5] == "6"
        assert np.all(np.linalg.norm(ant.getcol("POSITION"), axis=1) > 6.3e6)  # ECEF metres
    with tables.table(f"{path}/SPECTRAL_WINDOW", ack=False) as spw:
        assert np.array_equal(spw.getcell("CHAN_FREQ", 0), solution.freq_hz)
        assert spw.getcell("NUM_CHAN", 0) == 16 and np.allclose(spw.getcell("CHAN_WIDTH", 0), 244e3)
    with tables.table(f"{path}/FIELD", ack=False) as field:
        assert list(field.getcol("NAME")) == ["3C286"]
        assert np.allclose(np.degrees(field.getcol("PHASE_DIR")[0, 0]), [202.7845, 30.5092], atol=1e-3)
    with tables.table(f"{path}/OBSERVATION", ack=False) as obs:
        assert obs.getcol("TELESCOPE_NAME") == ["DSA-110"]
    with tables.table(f"{path}/HISTORY", ack=False) as hist:
        assert hist.nrows() == 0


def test_casa_table_receptor_order_and_conjugate(solution, tmp_path):
    """CPARAM's second axis is the feed (X, Y): a solution held as (YY, XX) is reordered;
    ``conjugate`` gives the table for an MS written with pyuvdata's default flip_conj."""
    from casacore import tables

    from contimg.interop.caltable import write_casa_caltable

    swapped = GainSolution(**{**solution.__dict__, "gains": solution.gains[..., ::-1].copy(),
                              "flags": solution.flags[..., ::-1].copy(), "snr": solution.snr[..., ::-1].copy()})
    path = write_casa_caltable(tmp_path / "s.bcal", sol=swapped, pols=(-6, -5), conjugate=True)
    with tables.table(str(path), ack=False) as t:
        cp, fl = t.getcol("CPARAM"), t.getcol("FLAG")
    assert np.array_equal(cp[solution.antenna_numbers], np.conj(solution.gains))
    assert np.array_equal(fl[solution.antenna_numbers], solution.flags)
    with pytest.raises(ValueError, match="one diagonal correlation per feed"):
        write_casa_caltable(tmp_path / "x.bcal", sol=solution, pols=(-5, -7))


@pytest.mark.parametrize("suffix", [".calh5", ".calfits"])
def test_uvcal_reads_back_equal(solution, tmp_path, suffix):
    from pyuvdata import UVCal

    from contimg.interop.caltable import write_uvcal

    path = write_uvcal(tmp_path / f"g{suffix}", sol=solution)
    cal = UVCal.from_file(str(path))
    assert (cal.cal_type, cal.cal_style, cal.gain_convention) == ("gain", "sky", "divide")
    assert cal.sky_catalog == "3C286" and cal.ref_antenna_name == "6"
    assert list(cal.jones_array) == [-5, -6]
    assert np.allclose(cal.freq_array.ravel(), solution.freq_hz, rtol=0, atol=1e-3)
    assert np.allclose(cal.time_array, [solution.mid_jd], rtol=0, atol=1e-8)
    order = [list(cal.ant_array).index(a) for a in solution.antenna_numbers]
    g = cal.gain_array[order, :, 0, :]
    f = cal.flag_array[order, :, 0, :]
    assert np.array_equal(f, solution.flags)
    assert np.allclose(g[~f], solution.gains[~f], rtol=1e-6, atol=0)
    assert np.allclose(cal.quality_array[order, :, 0, :], solution.snr, rtol=1e-6)
    with pytest.raises(ValueError, match="calh5 or .calfits"):
        write_uvcal(tmp_path / "g.h5", sol=solution)


# ---------------------------------------------------------------------------------------------
# on a processed group


def _uvcalibrate(uv, cal, **kw):
    from pyuvdata.utils import uvcalibrate

    with warnings.catch_warnings():  # gain_scale / pol_convention unset on both sides: nothing to convert
        warnings.simplefilter("ignore")
        return uvcalibrate(uv, cal, inplace=False, prop_flags=True, **kw)


def test_pyuvdata_uvcalibrate_gives_contimgs_apply(processed, tmp_path):
    """pyuvdata's uvcalibrate (an independent implementation) of the raw group with the exported
    UVCal equals contimg's apply within float32, flags included; the conjugated gains do not."""
    from pyuvdata import UVCal

    from contimg.calibrate import apply_gains
    from contimg.cli import main
    from contimg.interop.caltable import stored_solution, write_uvcal
    from contimg.interop.ms import chunk_to_uvdata
    from contimg.pipeline.exports import stored_group

    base, gid, cfg = processed
    chunk, corrected = stored_group(gid, root=base / "root", cfg=cfg)  # contimg's apply
    assert not np.allclose(chunk.vis, corrected)  # gains were applied
    out = tmp_path / "g.calh5"
    assert main(["export-cal", gid, "--root", str(base / "root"), "--out", str(out)]) == 0
    cal = UVCal.from_file(str(out))
    uv = chunk_to_uvdata(chunk)  # raw visibilities, contimg's final flags
    assert cal.Ntimes == chunk.time_jd.size  # the calibrator group: bandpass x time gain per integration
    got = _uvcalibrate(uv, cal)
    v = got.data_array.reshape(chunk.vis.shape)
    f = got.flag_array.reshape(chunk.vis.shape)
    assert np.array_equal(f, chunk.flags)
    ok = ~f
    scale = np.abs(corrected[ok]).max()
    assert np.abs(v[ok] - corrected[ok]).max() < 2e-6 * scale
    # the bandpass alone, valid over the group's time range (uvcalibrate's own time check passes),
    # against contimg's apply of the bandpass alone
    sol, _ = stored_solution(gid, root=base / "root")
    half = 0.5 * cfg.simulate.int_time_s / 86400.0
    ranged = write_uvcal(tmp_path / "r.calh5", sol=sol, time_range_jd=(chunk.time_jd.min() - half,
                                                                        chunk.time_jd.max() + half))
    got = _uvcalibrate(chunk_to_uvdata(chunk), UVCal.from_file(str(ranged)))
    bp_only, bp_flags = chunk.vis.copy(), chunk.flags.copy()
    apply_gains(vis=bp_only, flags=bp_flags, ant1=chunk.ant1, ant2=chunk.ant2, antenna_numbers=sol.antenna_numbers,
                gains=sol.gains, gain_flags=sol.flags)
    assert np.abs(got.data_array.reshape(chunk.vis.shape)[ok] - bp_only[ok]).max() < 2e-6 * scale
    assert np.abs(bp_only[ok] - corrected[ok]).max() > 1e-3 * scale  # the time gains made a difference
    # the control: conjugated gains are not contimg's apply (the check can tell the conventions apart)
    cal.gain_array = np.conj(cal.gain_array)
    wrong = _uvcalibrate(chunk_to_uvdata(chunk), cal).data_array.reshape(chunk.vis.shape)
    assert np.abs(wrong[ok] - corrected[ok]).max() > 1e-2 * scale


def test_export_cal_casa_table_of_a_group(processed, tmp_path, capsys):
    """export-cal writes the gains applied to the group; with --ms the subtables are the MS's."""
    from casacore import tables

    from contimg.cli import main
    from contimg.interop.caltable import stored_solution, stored_time_gains
    from contimg.pipeline.exports import export_ms
    from contimg.io.store import read_zarr

    base, gid, cfg = processed
    root = base / "root"
    arrays, attrs = read_zarr(root / "products" / gid / "cal.zarr")
    sol, _ = stored_solution(gid, root=root)
    assert np.array_equal(sol.gains, arrays["gains"]) and sol.calibrator == attrs["calibrator"]
    ms = export_ms(gid, root=root, out=tmp_path / "g.ms", cfg=cfg)
    out = tmp_path / "g.bcal"
    assert main(["export-cal", gid, "--root", str(root), "--out", str(out), "--ms", str(ms)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with tables.table(str(out), ack=False) as t, tables.table(str(ms), ack=False) as m:
        cp = t.getcol("CPARAM")
        assert t.getkeyword("MSName") == "g.ms"
        used = np.union1d(m.getcol("ANTENNA1"), m.getcol("ANTENNA2"))
    per_time = stored_time_gains(gid, root=root)  # one row per integration and antenna, time-major
    nrow = len(cp) // per_time.time_jd.size
    for t in (0, per_time.time_jd.size - 1):
        expect = sol.gains * per_time.gains[t][:, None, :]
        ok = ~(sol.flags | per_time.flags[t][:, None, :])
        np.testing.assert_allclose(cp[t * nrow + sol.antenna_numbers][ok], expect[ok], rtol=1e-6)
    assert set(used) <= set(sol.antenna_numbers.tolist())  # every antenna of the MS has a solution row
    for name in ("ANTENNA", "SPECTRAL_WINDOW", "FIELD"):
        with tables.table(f"{out}/{name}", ack=False) as a, tables.table(f"{ms}/{name}", ack=False) as b:
            assert a.nrows() == b.nrows() and a.colnames() == b.colnames(), name
    # errors are one line, exit 1
    assert main(["export-cal", gid, "--root", str(root), "--out", str(tmp_path / "g.txt")]) == 1
    assert main(["export-cal", "2001-01-01T00:00:00", "--root", str(root), "--out", str(out)]) == 1
    assert "has no calibration stored" in capsys.readouterr().err


def test_stored_solution_refuses_gains_that_differ(processed, tmp_path):
    """The solution file must be the one applied: a changed solution is an error, not an export."""
    import shutil

    from contimg.interop.caltable import stored_solution
    from contimg.calibrate.storage import load_solution, save_solution
    from contimg.io.store import read_zarr

    base, gid, cfg = processed
    root = tmp_path / "root"
    shutil.copytree(base / "root" / "cal", root / "cal")
    shutil.copytree(base / "root" / "products" / gid / "cal.zarr", root / "products" / gid / "cal.zarr")
    _, attrs = read_zarr(root / "products" / gid / "cal.zarr")
    path = root / "cal" / f"{attrs['solved_on']}.zarr"
    sol = load_solution(path)
    sol.gains = sol.gains * np.complex64(1j)
    save_solution(path, sol)
    with pytest.raises(ValueError, match="differs from the gains applied"):
        stored_solution(gid, root=root)

"""Measurement Set export: the tables CASA needs (python-casacore), read back by pyuvdata equal to
what was written, imaged by Debian's WSClean with the simulated sources where the truth has them."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage


MS_TABLES = ("ANTENNA", "FIELD", "SPECTRAL_WINDOW", "POLARIZATION", "OBSERVATION", "DATA_DESCRIPTION", "FEED")
MS_COLUMNS = ("DATA", "CORRECTED_DATA", "MODEL_DATA", "FLAG", "WEIGHT", "WEIGHT_SPECTRUM", "UVW", "TIME",
              "ANTENNA1", "ANTENNA2", "FIELD_ID")


def test_ms_has_what_casa_needs_and_reads_back(processed, tmp_path):
    from casacore import tables
    from pyuvdata import UVData

    from contimg.interop.ms import chunk_to_uvdata, write_ms
    from contimg.io.naming import group_files, scan_folder
    from contimg.io.reader import read_group

    base, gid, cfg = processed
    chunk = read_group(group_files(scan_folder(base / "in"), tolerance_s=60)[0])
    # known relations between the columns, independent of the phasing: C = 2 D, M = -i D
    raw = chunk.vis.copy()
    path = write_ms(tmp_path / "g.ms", chunk=chunk, corrected=2 * chunk.vis, model=-1j * chunk.vis)
    assert np.array_equal(chunk.vis, raw)  # the caller's visibilities are not rephased in place
    with tables.table(str(path), ack=False) as ms:
        assert set(MS_COLUMNS) <= set(ms.colnames())
        assert ms.nrows() == chunk.vis.shape[0] * chunk.vis.shape[1]
    for name in MS_TABLES:
        with tables.table(f"{path}/{name}", ack=False) as sub:
            assert sub.nrows() >= 1, name
    back = {c: UVData.from_file(str(path), data_column=c) for c in ("DATA", "CORRECTED_DATA", "MODEL_DATA")}
    d = back["DATA"]
    cross = d.ant_1_array != d.ant_2_array  # pyuvdata makes autocorrelations real on reading
    assert np.allclose(back["CORRECTED_DATA"].data_array[cross], 2 * d.data_array[cross], rtol=1e-6, atol=1e-6)
    assert np.allclose(back["MODEL_DATA"].data_array[cross], -1j * d.data_array[cross], rtol=1e-6, atol=1e-6)
    # DATA equals what was written: the chunk phased to the mid-time meridian, within float32
    from contimg.interop.ms import phase_uvdata

    written = chunk_to_uvdata(chunk)
    phase_uvdata(written, phasing="midtime", pointing_dec_rad=chunk.pointing_dec_rad)
    key = lambda uv: np.lexsort((uv.ant_2_array, uv.ant_1_array, np.round(uv.time_array * 86400 * 1e3)))  # noqa: E731
    a, b = written.data_array[key(written)], d.data_array[key(d)]
    c = cross[key(d)]
    assert np.allclose(a[c], b[c], rtol=1e-6, atol=1e-5 * np.abs(a).max())
    assert np.allclose(written.uvw_array[key(written)], d.uvw_array[key(d)], atol=1e-3)
    assert np.array_equal(np.sort(d.freq_array.ravel()), chunk.freq_hz)
    assert np.array_equal(written.flag_array[key(written)], d.flag_array[key(d)])


def test_per_integration_fields(processed, tmp_path):
    from casacore import tables

    from contimg.pipeline.exports import export_ms

    base, gid, cfg = processed
    path = export_ms(gid, root=base / "root", out=tmp_path / "p.ms", cfg=cfg, phasing="per_integration")
    with tables.table(f"{path}/FIELD", ack=False) as field, tables.table(str(path), ack=False) as ms:
        assert field.nrows() == cfg.simulate.n_times
        assert len(np.unique(ms.getcol("FIELD_ID"))) == cfg.simulate.n_times
        ra = field.getcol("PHASE_DIR")[:, 0, 0]
        # the meridian moves east to west at the sidereal rate: 15.04"/s of time
        step = np.degrees(np.diff(np.unwrap(ra))) * 3600 / cfg.simulate.int_time_s
        assert np.allclose(step, 15.041, rtol=2e-3)


def test_wsclean_finds_the_simulated_sources(processed, tmp_path):
    """Debian's WSClean images the exported CORRECTED_DATA; the bright sources it finds lie
    where the truth catalogue puts them, the calibrator brightest."""
    from contimg.pipeline.exports import export_ms
    from contimg.sky.catalogue import load_catalogue

    wsclean = shutil.which("wsclean")
    assert wsclean, "Debian's wsclean is not installed (tools/install.sh installs it)"
    base, gid, cfg = processed
    path = export_ms(gid, root=base / "root", out=tmp_path / "g.ms", cfg=cfg)
    subprocess.run([wsclean, "-quiet", "-size", "1024", "1024", "-scale", "5asec", "-niter", "3000", "-mgain", "0.8",
                    "-auto-threshold", "3", "-weight", "briggs", "0", "-pol", "I", "-data-column", "CORRECTED_DATA",
                    "-name", str(tmp_path / "wsc"), str(path)], check=True, capture_output=True)
    with fits.open(tmp_path / "wsc-image.fits") as hdul:
        image, wcs = hdul[0].data[0, 0], WCS(hdul[0].header).celestial
    rms = 1.4826 * np.median(np.abs(image - np.median(image)))
    labels, n = ndimage.label(image > 20 * rms)
    assert n >= 5
    pos = np.array(ndimage.maximum_position(image, labels, np.arange(1, n + 1)), float)
    peaks = image[pos[:, 0].astype(int), pos[:, 1].astype(int)]
    ra, dec = wcs.pixel_to_world_values(pos[:, 1], pos[:, 0])
    cat = load_catalogue(cfg.sky.catalogue)
    idx, sep, _ = SkyCoord(ra * u.deg, dec * u.deg).match_to_catalog_sky(SkyCoord(cat.ra_rad * u.rad,
                                                                                    cat.dec_rad * u.rad))
    brightest = np.argsort(-peaks)[:10]
    assert cat.name[idx[brightest[0]]] == cfg.simulate.calibrator
    assert np.all(sep[brightest].arcsec < 5.0), sep[brightest].arcsec  # within one 5" pixel (peak pixel)


@pytest.mark.parametrize("suffix", [".uvfits", ".uvh5"])
def test_calibrated_uvfits_and_uvh5(processed, tmp_path, suffix):
    """pyuvdata reads the export back equal to the stored group's calibrated data, phased by
    pyuvdata to the mid-time meridian (within float32)."""
    from pyuvdata import UVData

    from contimg.cli import main
    from contimg.interop.ms import chunk_to_uvdata, phase_uvdata
    from contimg.pipeline.exports import stored_group

    base, gid, cfg = processed
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'base = "test"\n[sky]\ncatalogue = "{cfg.sky.catalogue}"\n')
    out = tmp_path / f"g{suffix}"
    assert main(["export-uv", gid, "--root", str(base / "root"), "--out", str(out), "--config", str(cfg_path)]) == 0
    back = UVData.from_file(str(out))
    chunk, corrected = stored_group(gid, root=base / "root", cfg=cfg)
    assert not np.allclose(corrected, chunk.vis)  # gains were applied
    expect = chunk_to_uvdata(chunk, vis=corrected)
    phase_uvdata(expect, phasing="midtime", pointing_dec_rad=chunk.pointing_dec_rad)
    key = lambda uv: np.lexsort((uv.ant_2_array, uv.ant_1_array, np.round(uv.time_array * 86400 * 1e3)))  # noqa: E731
    a, b = expect.data_array[key(expect)], back.data_array[key(back)]
    cross = (expect.ant_1_array != expect.ant_2_array)[key(expect)]
    assert np.allclose(a[cross], b[cross], rtol=1e-5, atol=1e-5 * np.abs(a[cross]).max())
    assert np.array_equal(expect.flag_array[key(expect)], back.flag_array[key(back)])
    assert main(["export-uv", gid, "--root", str(base / "root"), "--out", str(tmp_path / "g.txt"),
                 "--config", str(cfg_path)]) == 1


# --- generic input: one file of any array through `contimg run FILE` ------------------------------

@pytest.mark.parametrize("suffix", [".ms", ".uvh5"])
def test_generic_run_of_an_exported_ms(processed, tmp_path, suffix):
    """The raw group exported as an MS (DATA uncalibrated, one field at the meridian at mid-group:
    the transiting calibrator), and the same as UVH5, run as generic input: the field is recognised as the listed
    calibrator, calibrated on it (its listed flux, a point source at the phase centre), imaged at
    its phase centre. The six brightest sources are found where the truth catalogue puts them
    (astropy WCS of the written FITS) within 0.2 beam, the calibrator brightest."""
    import json

    from contimg.cli import main
    from contimg.pipeline.exports import export_ms
    from contimg.sky.catalogue import load_catalogue

    base, gid, cfg = processed
    ms = export_ms(gid, root=base / "root", out=tmp_path / "g.ms", cfg=cfg)
    if suffix == ".uvh5":  # the same data as UVH5, written by pyuvdata
        from pyuvdata import UVData

        uv = UVData.from_file(str(ms), file_type="ms")
        uv.write_uvh5(str(tmp_path / "g.uvh5"))
        ms = tmp_path / "g.uvh5"
    root = tmp_path / "generic"
    config = tmp_path / "generic.toml"
    config.write_text('base = "test"\n[generic]\nnpix = 768\ncell_arcsec = 6.0\n[image]\nniter = 2000\nproducts = ["restored"]\n')
    assert main(["run", str(ms), "--root", str(root), "--config", str(config)]) == 0
    summary = json.loads((root / "products" / ms.name / "summary.json").read_text())
    assert summary["telescope"] and summary["dish_diameter_m"] == pytest.approx(4.65)
    (name, fld), = summary["fields"].items()
    assert fld["calibrator"] == cfg.simulate.calibrator
    assert summary["calibration"]["bandpass_field"] == name
    with fits.open(fld["files"]["restored"]) as hdul:
        image, wcs = hdul[0].data[0, 0], WCS(hdul[0].header).celestial
    rms = 1.4826 * np.median(np.abs(image - np.median(image)))
    labels, n = ndimage.label(image > 30 * rms)
    pos = np.array(ndimage.maximum_position(image, labels, np.arange(1, n + 1)), float)
    ra, dec = wcs.pixel_to_world_values(pos[:, 1], pos[:, 0])
    cat = load_catalogue(cfg.sky.catalogue)
    idx, sep, _ = SkyCoord(ra * u.deg, dec * u.deg).match_to_catalog_sky(SkyCoord(cat.ra_rad * u.rad,
                                                                                    cat.dec_rad * u.rad))
    peaks = image[pos[:, 0].astype(int), pos[:, 1].astype(int)]
    brightest = np.argsort(-peaks)[:6]
    assert n >= 6 and cat.name[idx[brightest[0]]] == cfg.simulate.calibrator
    beam_arcsec = fld["beam_arcsec"][0]
    assert np.all(sep[brightest].arcsec < 0.2 * beam_arcsec), (sep[brightest].arcsec, beam_arcsec)


def test_generic_run_refuses_bad_input(tmp_path, capsys):
    from contimg.cli import main

    bad = tmp_path / "broken.uvh5"
    bad.write_text("not hdf5")
    assert main(["run", str(bad), "--root", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "pyuvdata cannot read it" in err
    assert main(["run", str(tmp_path / "notes.txt"), "--root", str(tmp_path / "r")]) == 1
    (tmp_path / "notes.txt").write_text("x")
    assert main(["run", str(tmp_path / "notes.txt"), "--root", str(tmp_path / "r")]) == 1
    assert "not a UVH5, UVFITS or Measurement Set" in capsys.readouterr().err


def test_generic_run_fails_the_group_when_no_field_can_be_imaged(processed, tmp_path, capsys):
    """A file whose every sample is flagged: its one field cannot be imaged. The run does not
    crash: the file group is failed in stage image (exit 1, as for a folder whose every group
    failed), the field's error naming the file on the console and in failures.json, and
    `status` lists the failure."""
    import json

    from pyuvdata import UVData

    from contimg.cli import main
    from contimg.pipeline.exports import export_ms

    base, gid, cfg = processed
    uv = UVData.from_file(str(export_ms(gid, root=base / "root", out=tmp_path / "g.ms", cfg=cfg)), file_type="ms")
    uv.flag_array[:] = True
    path = tmp_path / "flagged.uvh5"
    uv.write_uvh5(str(path))
    root = tmp_path / "generic"
    assert main(["run", str(path), "--root", str(root), "--config", "test"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: failed in stage image" in err and "has no unflagged data" in err
    (failure,) = json.loads((root / "failures.json").read_text())
    assert failure["group_id"] == path.name and failure["stage"] == "image"
    assert str(path) in failure["error"] and "no unflagged data" in failure["error"]
    assert not (root / "products" / path.name / "summary.json").exists()
    assert main(["status", "--root", str(root)]) == 0
    assert f"failed       {path.name}  image: GenericInputError: {path}" in capsys.readouterr().out

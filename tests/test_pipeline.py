"""One group end to end: products, databases, calibration and the sky against the truth file."""

import json

import h5py
import numpy as np
import pytest
from astropy.io import fits

from contimg.state.products import ProductsDB
from contimg.io.store import read_zarr


def test_all_groups_complete(pipeline_run):
    results, code, root = pipeline_run
    assert code == 0, [r.error for r in results]
    assert [r.status for r in results] == ["completed", "completed"]
    assert json.loads((root / "failures.json").read_text()) == []
    assert all(r.cal_applied for r in results)  # the second group uses the first one's solution


def test_products_and_database(pipeline_run, test_config):
    results, _, root = pipeline_run
    db = ProductsDB(root / "state" / "products.sqlite3")
    groups = db.groups()
    assert [g["group_id"] for g in groups] == [r.group_id for r in results]
    assert all(g["status"] == "completed" and g["cal_applied"] == 1 for g in groups)
    images = db.images()
    assert len(images) == 2 * len(test_config.image.products)
    assert {i["type"] for i in images} == set(test_config.image.products)
    for row in images:
        with fits.open(row["path"]) as hdul:
            h = hdul[0].header
            assert hdul[0].data.shape == (1, 1, test_config.image.npix, test_config.image.npix) or row["type"] == "psf"
        for key in ("CTYPE1", "CRVAL1", "CDELT1", "CRPIX1", "CTYPE2", "CRVAL2", "CTYPE3", "CRVAL3", "BUNIT",
                    "DATE-OBS", "RADESYS"):
            assert key in h, key
        assert h["CTYPE1"] == "RA---SIN" and h["CTYPE2"] == "DEC--SIN"
        if row["type"] in ("restored", "pbcor"):
            assert h["BMAJ"] > h["BMIN"] > 0
    for r in results:
        for name in ("flags.zarr", "cal.zarr", "image.zarr"):
            assert (root / "products" / r.group_id / name).is_dir()
    db.close()


def test_replay_creates_no_duplicate_rows(tmp_path, sim_dir, test_config, pipeline_run):
    """Running a group again into the same root updates its rows; it adds none."""
    import shutil

    from contimg.io.naming import group_files, scan_folder
    from contimg.service.batch import run_batch

    results, _, root = pipeline_run
    second = group_files(scan_folder(sim_dir), tolerance_s=60)[1]
    for path in second.files.values():
        shutil.copy(path, tmp_path / path.name)
    before = ProductsDB(root / "state" / "products.sqlite3")
    n_groups, n_images = len(before.groups()), len(before.images())
    before.close()
    _, code = run_batch(tmp_path, root=root, cfg=test_config)
    after = ProductsDB(root / "state" / "products.sqlite3")
    assert code == 0 and len(after.groups()) == n_groups and len(after.images()) == n_images
    after.close()


def test_gains_match_the_truth(pipeline_run, sim_dir):
    """The solution on the calibrator group against the simulated bandpass x gain, referred to
    the same reference antenna. Per-channel gains on a 3 Jy calibrator over baselines >= 1 km
    have an SNR of ~40, so the errors must be consistent with the solver's own SNR (which this
    checks too) and small in absolute terms: median 3 % in amplitude, 2 degrees in phase."""
    results, _, root = pipeline_run
    cal_group = next(r.group_id for r in results if r.calibrator)
    arrays, attrs = read_zarr(root / "cal" / f"{cal_group}.zarr")
    with h5py.File(sim_dir / "truth.h5") as f:
        ants = f["antenna_numbers"][()]
        true = f["bandpass"][()] * f[f"groups/{cal_group}/gain"][()].mean(axis=0)[:, None, :]
        names = [str(a + 1) for a in ants]
    assert np.array_equal(arrays["antenna_numbers"], ants)
    k = names.index(attrs["refant"])
    true = true * (np.conj(true[k]) / np.abs(true[k]))[None]
    ok = ~arrays["flags"]
    assert ok.mean() > 0.95  # only RFI-flagged channels are missing
    ratio = arrays["gains"][ok] / true[ok]
    amp_err, phase_err = np.abs(np.abs(ratio) - 1), np.degrees(np.abs(np.angle(ratio)))
    assert np.median(amp_err) < 0.03 and np.median(phase_err) < 2.0
    rel_err = np.abs(arrays["gains"][ok] - true[ok]) / np.abs(true[ok])
    assert np.median(rel_err * arrays["snr"][ok]) < 2.0


@pytest.mark.parametrize("group_index", [0, 1])
def test_restored_image_recovers_the_sky(pipeline_run, sim_dir, group_index):
    """Every truth source above 10 sigma (apparent flux over the residual's robust RMS) in the
    primary-beam-corrected image: position within 0.2 synthesized beam (astropy WCS of the
    FITS file against the truth position) for all; flux within 5 % of the truth at the image's
    frequency for at least 90 % of them and within 10 % for all. (The goal is 5 % for all: in the
    calibrator's own group a few sources are still 5-8 % low, see docs/architecture.md.)"""
    from contimg.sim.truthcheck import measure_truth_sources

    results, _, root = pipeline_run
    gid = results[group_index].group_id
    rows, _ = measure_truth_sources(products_dir=root / "products" / gid, group_id=gid,
                                    truth_path=sim_dir / "truth.h5")
    lines = [f"{r['name']}: S={r['flux_jy']:.3f} Jy measured {r['measured_jy']:.3f} ({r['ratio'] - 1:+.1%}), "
             f"offset {r['offset_beam']:.2f} beam, SNR {r['snr']:.0f}" for r in rows]
    bad = [ln for r, ln in zip(rows, lines) if r["offset_beam"] >= 0.2 or abs(r["ratio"] - 1) >= 0.10]
    outside_5pc = [ln for r, ln in zip(rows, lines) if 0.05 <= abs(r["ratio"] - 1) < 0.10]
    assert len(rows) >= 20
    assert not bad, "\n".join(bad)
    assert len(outside_5pc) <= 0.1 * len(rows), "\n".join(outside_5pc)


def test_writing_a_product_the_stored_images_lack_names_the_group_and_the_remedy(tmp_path):
    """A group resumed from an image.zarr made when `image.products` named fewer images (dirty,
    psf and model are kept only when named): the write stage fails with the group, the missing
    image and what to do, not a KeyError."""
    from contimg.config import load_config
    from contimg.imaging.imager import ImageSet
    from contimg.io.naming import Group
    from contimg.pipeline.stages import run_stage
    from contimg.pipeline.work import GroupWork

    plane = np.zeros((8, 8), np.float32)
    imgs = ImageSet(images={k: plane for k in ("residual", "restored", "pbcor", "pb")}, ra_rad=1.0, dec_rad=0.5,
                    cell_rad=1e-4, freq_hz=1.4e9, bandwidth_hz=1e8, time_start_jd=2461000.5, time_mid_jd=2461000.5,
                    beam_rad=(3e-4, 2e-4, 0.0), noise_jy=1e-3, peak_jy=0.0, clean_iterations=0)
    work = GroupWork(group=Group("2026-03-22T07:51:03", {}), root=tmp_path, imgs=imgs)
    cfg = load_config("test", use_env=False)
    with pytest.raises(ValueError, match=r"2026-03-22T07:51:03: its image.zarr has no dirty, psf, model image"):
        run_stage("write", work, cfg)

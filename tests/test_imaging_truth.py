"""Imaging alone against the simulator's truth: a group without RFI whose visibilities are
corrected with the true gains from truth.h5 (nothing left to calibrate or flag; the simulator
always puts a delay slope into each antenna's bandpass), imaged as the pipeline does
(`make_images`), its FITS
products measured at the truth positions. Every source above 10 sigma within 0.1 synthesized
beam and within 2 % in flux after primary-beam correction (or 3 sigma of its own noise where
that is larger), sources far off the beam centre included (the beam of a 5-minute drift is
the time-averaged beam); the residual's RMS within 20 % of the thermal noise expected from the
simulated SEFD and the imaging weights."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from contimg.calibrate.apply import apply_gains
from contimg.config import load_config
from contimg.io.fits import imageset_header, write_fits
from contimg.imaging.imager import make_images
from contimg.imaging.prep import rephase_stokes_i
from contimg.imaging.weights import imaging_weights
from contimg.io.naming import group_files, scan_folder
from contimg.io.reader import read_group
from contimg.sim import simulate
from contimg.sim.corrupt import thermal_sigma_jy
from contimg.sim.truthcheck import measure_truth_sources


@pytest.fixture(scope="module", params=[1, 4], ids=["unaveraged", "averaged-in-time"])
def perfect_group(tmp_path_factory, request):
    """The group imaged as it is, and with baseline-dependent averaging in time (up to 4
    integrations, `ImageConfig.average_times_max`)."""
    base = tmp_path_factory.mktemp("imgtruth")
    cfg = load_config("test", use_env=False, overrides={
        "simulate": {"rfi": False, "n_faint_sources": 30, "faint_radius_deg": 1.3, "faint_flux_jy": [0.05, 0.5]},
        "image": {"products": ["restored", "residual", "pbcor"], "average_times_max": request.param}})
    (grp,) = simulate(base / "in", n_groups=1, cfg=cfg.simulate)
    (group,) = group_files(scan_folder(base / "in"), tolerance_s=cfg.grouping.group_tolerance_s)
    chunk = read_group(group)
    with h5py.File(base / "in" / "truth.h5") as f:
        ants, bandpass = f["antenna_numbers"][()], f["bandpass"][()]  # ascending frequency, as the chunk
        time_gain = f[f"groups/{grp.group_id}/gain"][()]  # (ntime, nant, npol)
    apply_gains(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2, antenna_numbers=ants,
                gains=bandpass, gain_flags=np.zeros(bandpass.shape, bool), time_gains=time_gain,
                time_gain_flags=np.zeros(time_gain.shape, bool))
    imgs = make_images(chunk, cfg=cfg.image, nthreads=2)
    out = base / "products"
    out.mkdir()
    for kind in cfg.image.products:
        write_fits(out / f"{grp.group_id}.{kind}.fits", image=imgs.images[kind],
                   header=imageset_header(imgs, kind, extra={"OBJECT": grp.group_id}))
    # the noise the image should have: Stokes I = (XX + YY) / 2 of visibilities with the
    # simulated per-component noise, summed with the imaging weights (dirty image = weighted mean)
    uvw, _, wgt = rephase_stokes_i(chunk=chunk, ra_rad=imgs.ra_rad, dec_rad=imgs.dec_rad)
    w = imaging_weights(uvw_m=uvw, freq_hz=chunk.freq_hz, wgt=wgt, weighting=cfg.image.weighting,
                        robust=cfg.image.robust, npix=cfg.image.npix, cell_rad=imgs.cell_rad).astype(np.float64)
    sigma_vis = thermal_sigma_jy(sefd_jy=cfg.simulate.sefd_jy, chan_width_hz=chunk.chan_width_hz,
                                 int_time_s=chunk.int_time_s)
    expected = sigma_vis / np.sqrt(2) * np.sqrt(np.sum(w**2)) / np.sum(w)
    rows, sigma = measure_truth_sources(products_dir=out, group_id=grp.group_id, truth_path=base / "in" / "truth.h5")
    return {"rows": rows, "sigma": sigma, "expected": expected}


def test_every_source_within_a_tenth_of_a_beam_and_2pc(perfect_group):
    rows = perfect_group["rows"]
    lines = [f"{r['name']}: S={r['flux_jy']:.3f} Jy ratio {r['ratio']:.4f} offset {r['offset_beam']:.3f} beam "
             f"SNR {r['snr']:.0f} pb {r['pb']:.2f}" for r in rows]
    print("\n".join(lines))
    assert len(rows) >= 25, "\n".join(lines)
    bad = [ln for r, ln in zip(rows, lines)
           if r["offset_beam"] >= 0.1 or abs(r["ratio"] - 1) >= max(0.02, 3 / r["snr"])]
    assert not bad, "\n".join(bad)
    # the averaged primary beam is exercised: sources down the beam's flank are right too
    assert sum(r["pb"] < 0.6 for r in rows) >= 5, "\n".join(lines)


def test_residual_rms_is_the_thermal_noise(perfect_group):
    ratio = perfect_group["sigma"] / perfect_group["expected"]
    print(f"residual RMS {perfect_group['sigma']:.4g} Jy, thermal {perfect_group['expected']:.4g} Jy: {ratio:.3f}")
    assert 0.8 < ratio < 1.2, f"residual RMS {perfect_group['sigma']:.3g} Jy, thermal {perfect_group['expected']:.3g} Jy"

"""The simulator's files carry the real format and header quirks, and its visibilities agree with
an independent simulator (matvis)."""

import h5py
import numpy as np
import pytest
from astropy.time import Time

from contimg.io.naming import group_files, scan_folder
from contimg.sim.simulate import band_frequencies


def test_files_have_real_names_and_grouping(sim_dir):
    assert not list(sim_dir.glob("*_incomplete.hdf5"))
    files = scan_folder(sim_dir)
    groups = group_files(files, tolerance_s=60)
    assert len(groups) == 2 and all(len(g.files) == 16 for g in groups)
    stamps = [f.timestamp for f in files if f.path.name.startswith(groups[0].group_id[:13])]
    assert len({s for s in stamps}) > 1  # per-node clock jitter: names differ by seconds


def test_header_quirks(sim_dir, test_config):
    path = sorted(sim_dir.glob("*_sb00.hdf5"))[0]
    with h5py.File(path) as f:
        h = f["Header"]
        assert h["phase_type"][()] == b"drift"
        assert h["telescope_name"][()] == b"OVRO_MMA" and h["instrument"][()] == b"DSA"
        assert h["Nants_telescope"][()] == 117 and h["Nants_data"][()] == 96
        assert h["Nbls"][()] == 96 * 97 // 2 and h["Nblts"][()] == 24 * 4656
        assert h["uvw_array"].dtype == np.float32
        assert h["channel_width"][()] < 0
        ek = h["extra_keywords"]
        assert ek["phase_center_epoch"][()] == b"HADEC" and ek["ha_phase_center"][()] == 0.0
        assert len(ek["applied_delays_ns"][()].split()) == 2 * 117
        assert f["Data"]["visdata"].shape == (24 * 4656, 1, test_config.simulate.chans_per_subband, 2)
        assert f["Data"]["visdata"].dtype == np.complex64
        freq00 = h["freq_array"][()].ravel()
    with h5py.File(sorted(sim_dir.glob("*_sb15.hdf5"))[0]) as f:
        freq15 = f["Header"]["freq_array"][()].ravel()
    assert freq00.min() > freq15.max()  # sb00 is the highest subband
    full, _ = band_frequencies(n_subbands=16, chans_per_subband=48)
    assert full[0] == pytest.approx(1498.6432e6, abs=1e3)  # the real first channel


def test_pyuvdata_reads_with_the_real_options(sim_dir):
    from pyuvdata import UVData

    path = sorted(sim_dir.glob("*_sb03.hdf5"))[0]
    uv = UVData()
    uv.read(path, file_type="uvh5", run_check=False, strict_uvw_antpos_check=False)
    assert uv.Nants_data == 96 and uv.telescope.name == "OVRO_MMA"
    assert uv.extra_keywords["phase_center_epoch"] == "HADEC"
    assert uv.phase_center_catalog[0]["cat_type"] == "unprojected"  # "drift" in the file


def test_visibilities_agree_with_matvis():
    """Our direct-sum predict (through `sky_visibilities`, as the simulator uses it) against
    matvis on a zenith-pointed small array: same phases to 1e-4 and the Airy beam amplitude.
    matvis returns an unpolarized feed's visibility with I split between the two feeds
    (XX = I/2, pyuvdata's "sum" convention); ours is XX = YY = I ("avg"), hence the 2."""
    from matvis import simulate_vis
    from pyuvdata.analytic_beam import AiryBeam

    from contimg.sky.geometry import C_M_S, hadec_to_enu, hadec_to_icrs
    from contimg.sky.skymodel import PointSources, sky_visibilities
    from contimg.sky.telescope import ARRAY_LAT_RAD, active_station_numbers, array_location, stations

    enu = stations().enu_m[active_station_numbers(8)]
    freqs = np.array([1.33e9, 1.41e9, 1.49e9])
    times = Time(2461121.9 + np.arange(3) * 12.884902 / 86400, format="jd")
    dec0 = ARRAY_LAT_RAD  # the dish points at the zenith, as matvis assumes
    ra_c, dec_c = hadec_to_icrs(ha_rad=0.0, dec_rad=dec0, time_jd=times.jd[1])
    ras = ra_c + np.array([0.0, 0.01, -0.02])
    decs = dec_c + np.array([0.0, 0.015, -0.01])
    flux = np.array([3.0, 0.5, 1.2])
    src = PointSources(np.array(["a", "b", "c"]), ras, decs, flux, np.zeros(3), 1.4e9)
    i1, i2 = np.triu_indices(len(enu), 1)
    b = enu[i2] - enu[i1]
    ours = sky_visibilities(sources=src, time_jd=times.jd, freq_hz=freqs, b_enu_m=b, pointing_dec_rad=dec0)
    # undo the fringe-stop to compare with matvis's drift-scan (zenith) visibilities
    s0 = hadec_to_enu(ha_rad=0.0, dec_rad=dec0)
    drift = ours * np.exp(2j * np.pi * freqs[None, None, :] / C_M_S * (b @ s0)[None, :, None])
    mv = simulate_vis(ants={k: enu[k] for k in range(len(enu))}, fluxes=np.repeat(flux[:, None], 3, 1), ra=ras,
                      dec=decs, freqs=freqs, times=times, beams=[AiryBeam(diameter=4.65)],
                      telescope_loc=array_location(), polarized=False, precision=2,
                      antpairs=np.stack([i1, i2], 1))
    theirs = 2.0 * np.transpose(mv, (1, 2, 0))  # (freq, time, bl) -> (time, bl, freq)
    assert np.max(np.abs(drift - theirs)) / np.max(np.abs(theirs)) < 1e-4


def test_airy_beam_matches_pyuvdata():
    from pyuvdata.analytic_beam import AiryBeam

    from contimg.sky.beam import airy_power

    za = np.radians(np.linspace(0, 6, 61))
    freqs = np.array([1.31e9, 1.4e9, 1.5e9])
    theirs = AiryBeam(diameter=4.65).power_eval(az_array=np.zeros_like(za), za_array=za, freq_array=freqs)
    theirs = np.real(theirs[0, 0])  # (freq, za), XX power
    ours = airy_power(sin_theta=np.sin(za)[None, :], freq_hz=freqs[:, None])
    assert np.allclose(ours, theirs / theirs[:, :1], rtol=0, atol=1e-6)

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


def test_strip_mode_one_sky_along_the_strip_with_a_variable_and_a_transient(tmp_path):
    """Strip mode (`simulate.sky_mode = "strip"`): one fixed sky for all groups, spread over the
    strip the fields drift along (each 5-minute group's field ~1.29 deg further east) plus the
    margins, at the asked density; the variable and the transient recorded with their light
    curves; and the files carry them: each group's visibilities (read with pyuvdata, the true
    gains divided out) equal matvis's for the truth sky with that group's fluxes, and differ from
    it when the transient is left out of its group."""
    from astropy import units as u
    from astropy.coordinates import HADec, SkyCoord
    from matvis import simulate_vis
    from pyuvdata import UVData
    from pyuvdata.analytic_beam import AiryBeam

    from contimg.config import load_config
    from contimg.sim import simulate
    from contimg.sky.geometry import C_M_S, hadec_to_enu
    from contimg.sky.telescope import ARRAY_LAT_RAD, array_location, stations

    over = {"n_antennas": 8, "n_subbands": 1, "chans_per_subband": 3, "n_times": 2, "int_time_s": 154.5,
            "calibrator_group": None, "pointing_dec_deg": float(np.degrees(ARRAY_LAT_RAD)), "sefd_jy": 0.0,
            "rfi": False, "gain_amp_scatter": 0.0, "gain_phase_scatter_deg": 0.0, "sky_mode": "strip",
            "strip_sources_per_deg2": 0.8, "variable_flux_jy": [0.2, 0.6, 0.2], "transient_flux_jy": 0.5,
            "transient_group": 2}
    cfg = load_config("test", use_env=False, overrides={"simulate": over}).simulate
    groups = simulate(tmp_path, n_groups=3, cfg=cfg)
    with h5py.File(tmp_path / "truth.h5") as f:
        assert f.attrs["sky_mode"] == "strip"
        s = {k: f["sources"][k][()] for k in ("ra_rad", "dec_rad", "flux_jy", "spectral_index", "group")}
        names = [n.decode() for n in f["sources/name"][()]]
        var, tra = f["variable/flux_jy"][()], f["transient/flux_jy"][()]
        bandpass, freq_asc, ants = f["bandpass"][()], f["freq_hz"][()], f["antenna_numbers"][()]
        gains = {g.group_id: f[f"groups/{g.group_id}/gain"][()] for g in groups}
    assert list(var) == over["variable_flux_jy"] and list(tra) == [0.0, 0.0, 0.5]
    assert names[-2:] == ["var000", "tra000"] and list(s["group"][-2:]) == [-2, -3]
    fixed = s["group"] == 0
    # field centres: the meridian at the pointing declination at each group's mid-time (astropy)
    loc = array_location()
    centres = [SkyCoord(ha=0 * u.deg, dec=over["pointing_dec_deg"] * u.deg,
                        frame=HADec(obstime=Time(g.time_jd.mean(), format="jd"), location=loc, pressure=0 * u.hPa)).icrs
               for g in groups]
    steps = [centres[k].separation(centres[k + 1]).deg / np.cos(centres[k].dec.rad) for k in range(2)]
    assert np.allclose(steps, 309.0 / 86164.0905 * 360.0, rtol=2e-3)  # ~1.29 deg of RA per group
    ra = np.degrees(s["ra_rad"][fixed])
    dec = np.degrees(s["dec_rad"][fixed])
    pad = cfg.strip_margin_deg / np.cos(centres[0].dec.rad)
    lo, hi = centres[0].ra.deg - pad, centres[-1].ra.deg + pad
    assert ra.min() >= lo and ra.max() <= hi
    assert np.all(np.abs(dec - centres[0].dec.deg) <= cfg.strip_halfwidth_deg + 0.01)
    area = np.radians(hi - lo) * (np.sin(np.radians(centres[0].dec.deg + cfg.strip_halfwidth_deg))
                                  - np.sin(np.radians(centres[0].dec.deg - cfg.strip_halfwidth_deg))) * np.degrees(1) ** 2
    assert abs(fixed.sum() - cfg.strip_sources_per_deg2 * area) <= 0.02 * fixed.sum() + 1
    # the transient sits at its offset from its group's field centre
    east, north = SkyCoord(ra=centres[2].ra, dec=centres[2].dec).spherical_offsets_to(SkyCoord(ra=s["ra_rad"][-1] * u.rad, dec=s["dec_rad"][-1] * u.rad))
    assert np.allclose([east.deg, north.deg], cfg.transient_offset_deg, atol=0.01)
    # the data: matvis for the truth sky with each group's fluxes
    st = stations()
    enu = st.enu_m[ants]
    dec0 = np.radians(over["pointing_dec_deg"])
    s0 = hadec_to_enu(ha_rad=0.0, dec_rad=dec0)
    i1, i2 = np.triu_indices(ants.size, 1)
    for g, group in enumerate(groups):
        uv = UVData()
        uv.read(group.files[0], file_type="uvh5", run_check=False, strict_uvw_antpos_check=False)
        times = Time(group.time_jd, format="jd")
        data = np.stack([uv.get_data(int(ants[a]), int(ants[b]), "xx") for a, b in zip(i1, i2)], axis=1)  # (t, bl, f)
        order = np.argsort(uv.freq_array.ravel())
        data = data[:, :, order]
        gfull = bandpass[None, :, :, 0] * gains[group.group_id][:, :, None, 0]  # (t, a, f)
        data = data / (gfull[:, i1] * np.conj(gfull[:, i2]))
        b = enu[i2] - enu[i1]
        data = data * np.exp(2j * np.pi * freq_asc[None, None, :] / C_M_S * (b @ s0)[None, :, None])  # undo fringe-stop

        def matvis_for(flux):
            sed = flux[:, None] * (freq_asc[None, :] / 1.4e9) ** s["spectral_index"][:, None]
            mv = simulate_vis(ants={k: enu[k] for k in range(ants.size)}, fluxes=sed, ra=s["ra_rad"], dec=s["dec_rad"],
                              freqs=freq_asc, times=times, beams=[AiryBeam(diameter=4.65)], telescope_loc=loc,
                              polarized=False, precision=2, antpairs=np.stack([i1, i2], 1))
            return 2.0 * np.transpose(mv, (1, 2, 0))

        flux = s["flux_jy"].copy()
        flux[-2], flux[-1] = var[g], tra[g]
        expected = matvis_for(flux)
        scale = np.max(np.abs(expected))
        assert np.max(np.abs(data - expected)) / scale < 1e-4, group.group_id
        if g == over["transient_group"]:
            flux[-1] = 0.0
            assert np.max(np.abs(data - matvis_for(flux))) / scale > 1e-2

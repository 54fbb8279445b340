"""The sky catalogue's file forms (CSV, FITS table, VOTable) and tools/nvss_to_catalogue.py.

Small NVSS-like tables are built from known integer positions and fluxes (centiseconds of RA,
deciarcseconds of Dec, tenths of mJy), written in each form VizieR serves VIII/65/nvss in, converted,
and the catalogue read back is compared with the known values; the cone and flux cuts are checked
against astropy's `SkyCoord.separation` on the known values.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import from_table, writeto
from astropy.table import Column, Table

from contimg.sky.catalogue import (DEFAULT_REF_FREQ_HZ, DEFAULT_SPECTRAL_INDEX, load_catalogue, write_catalogue)

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "nvss_to_catalogue.py"
CENTRE = (202.78, 30.51)  # deg; 3C 286's neighbourhood


def _tool():
    spec = importlib.util.spec_from_file_location("nvss_to_catalogue", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def nvss():
    """Known NVSS-like rows: sexagesimal strings built from integers, and the degrees they mean."""
    rng = np.random.default_rng(5)
    n = 60
    ra_deg0 = CENTRE[0] + rng.uniform(-7, 7, n)
    dec_deg0 = CENTRE[1] + rng.uniform(-6, 6, n)
    # a few that exercise the RA wrap and a small negative declination ("-00 ...")
    ra_deg0[:4] = [359.99, 0.004, 0.5, 180.0]
    dec_deg0[:4] = [-0.2, 0.3, -0.01, -39.9]
    ra_cs = np.round(ra_deg0 / 15 * 360000).astype(np.int64)  # centiseconds of time
    dec_ds = np.round(dec_deg0 * 36000).astype(np.int64)  # deciarcseconds
    ra_str, dec_str, names = [], [], []
    for cs, ds in zip(ra_cs, dec_ds):
        h, m, s = cs // 360000, (cs // 6000) % 60, cs % 6000
        sign = "-" if ds < 0 else "+"
        a = abs(ds)
        d, dm, dsec = a // 36000, (a // 600) % 60, a % 600
        ra_str.append(f"{h:02d} {m:02d} {s // 100:02d}.{s % 100:02d}")
        dec_str.append(f"{sign}{d:02d} {dm:02d} {dsec // 10:02d}.{dsec % 10:d}")
        names.append(f"{h:02d}{m:02d}{s // 100:02d}{sign}{d:02d}{dm:02d}{dsec // 10:02d}")
    tenths = rng.integers(25, 30000, n)  # 2.5 mJy .. 3 Jy
    tenths[:3] = [100, 99, 101]  # straddle a 10 mJy cut
    mjy = np.array([float(f"{t // 10}.{t % 10}") for t in tenths])
    return {"ra_str": ra_str, "dec_str": dec_str, "name": names, "mjy": mjy,
            "ra_deg": ra_cs / 24000.0, "dec_deg": dec_ds / 36000.0,  # 1 cs = 15/360000 deg; 1 ds = 1/36000 deg
            "e_mjy": np.round(mjy * 0.05 + 0.4, 1), "maj": np.full(n, 52.2), "min": np.full(n, 46.4)}


def _sexagesimal_table(k):
    t = Table()
    t["NVSS"] = Column(k["name"])
    t["RAJ2000"] = Column(k["ra_str"], unit=u.Unit("h:m:s", parse_strict="silent"))
    t["DEJ2000"] = Column(k["dec_str"], unit=u.Unit("d:m:s", parse_strict="silent"))
    t["S1.4"] = Column(k["mjy"], unit="mJy")
    t["e_S1.4"] = Column(k["e_mjy"], unit="mJy")
    t["MajAxis"] = Column(k["maj"], unit="arcsec")
    t["MinAxis"] = Column(k["min"], unit="arcsec")
    return t


def _write_votable(t, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VizieR's "h:m:s"/"d:m:s" are not VOUnits
        writeto(from_table(t), str(path))
    return path


def _write_vizier_tsv(k, path, *, columns=("RAJ2000", "DEJ2000", "S1.4", "e_S1.4", "MajAxis", "MinAxis", "NVSS")):
    """The shape of VizieR's asu-tsv output: # comments, header, units, dashes, rows."""
    cells = {"RAJ2000": ('"h:m:s"', k["ra_str"]), "DEJ2000": ('"d:m:s"', k["dec_str"]),
             "S1.4": ("mJy", [f"{v:7.1f}" for v in k["mjy"]]), "e_S1.4": ("mJy", [f"{v:5.1f}" for v in k["e_mjy"]]),
             "MajAxis": ("arcsec", [f"<{v:5.1f}" for v in k["maj"]]),
             "MinAxis": ("arcsec", [f"<{v:5.1f}" for v in k["min"]]), "NVSS": ("", k["name"])}
    lines = ["#", "#   VizieR Astronomical Server vizier.cds.unistra.fr", "#    Date: 2026-03-22T07:48:54 [V7.4]",
             "#", "#Coosys\tJ2000:\teq_FK5 J2000", "#INFO\tvotable-version=1.99+ (14-Oct-2013)\t",
             "#RESOURCE=yCat_8065", "#Name: VIII/65", "#Title: 1.4GHz NRAO VLA Sky Survey (NVSS) (Condon+ 1998)",
             "#Table\tVIII_65_nvss:", "#Name: VIII/65/nvss", "#Title: The NVSS Catalog (Table of 1773484 sources)",
             "#Column\tRAJ2000\t(a11)\tRight ascension (FK5, Equinox=J2000.0)\t[ucd=pos.eq.ra;meta.main]",
             "#Column\tDEJ2000\t(a11)\tDeclination (FK5, Equinox=J2000.0)\t[ucd=pos.eq.dec;meta.main]",
             "#Column\tS1.4\t(F8.1)\t[0.5/1e+06]? Integrated 1.4GHz flux density of radio source\t[ucd=phot.flux.density]",
             "\t".join(columns), "\t".join(cells[c][0] for c in columns),
             "\t".join("-" * 11 for _ in columns)]
    for i in range(len(k["mjy"])):
        lines.append("\t".join(cells[c][1][i] for c in columns))
    path.write_text("\n".join(lines) + "\n\n#END#\n")
    return path


def _check(cat, k, *, exact_flux=True):
    assert len(cat) == len(k["mjy"])
    ra = np.degrees(cat.ra_rad)
    dra = (ra - k["ra_deg"] + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(dra, 0.0, atol=1e-6)
    np.testing.assert_allclose(np.degrees(cat.dec_rad), k["dec_deg"], rtol=0, atol=1e-6)
    if exact_flux:
        assert np.array_equal(cat.flux_jy, k["mjy"] / 1000.0)
    assert cat.ref_freq_hz == 1.4e9
    assert np.all(cat.spectral_index == -0.7)


@pytest.mark.parametrize("form", ["votable", "fits", "tsv", "votable_deg_jy"])
def test_nvss_forms_convert_to_the_known_catalogue(nvss, form, tmp_path):
    tool = _tool()
    if form == "votable":
        src = _write_votable(_sexagesimal_table(nvss), tmp_path / "nvss.vot")
    elif form == "fits":  # VizieR's FITS: positions in degrees
        t = Table()
        t["NVSS"] = Column(nvss["name"])
        t["RAJ2000"] = Column(nvss["ra_deg"], unit="deg")
        t["DEJ2000"] = Column(nvss["dec_deg"], unit="deg")
        t["S1.4"] = Column(nvss["mjy"], unit="mJy")
        t["e_S1.4"] = Column(nvss["e_mjy"], unit="mJy")
        src = tmp_path / "nvss.fits"
        t.write(src, format="fits")
    elif form == "tsv":
        src = _write_vizier_tsv(nvss, tmp_path / "nvss.tsv")
    else:  # VizieR's computed positions only, and a flux column in Jy: the unit is honoured
        t = Table()
        t["_RAJ2000"] = Column(nvss["ra_deg"], unit="deg")
        t["_DEJ2000"] = Column(nvss["dec_deg"], unit="deg")
        t["S1.4"] = Column(nvss["mjy"] / 1000.0, unit="Jy")
        src = _write_votable(t, tmp_path / "nvss.xml")
    out = tmp_path / "cat.csv"
    assert tool.convert(src, out) == len(nvss["mjy"])
    assert not (tmp_path / "cat.csv.tmp").exists()
    cat = load_catalogue(out)
    _check(cat, nvss)
    if form == "votable_deg_jy":  # no NVSS column: named from the position
        assert cat.name[0] == "J235957.6-001200"  # 359.99 deg, -0.2 deg
    else:
        assert list(cat.name) == ["NVSS J" + n for n in nvss["name"]]


def test_cone_and_flux_cuts_match_skycoord(nvss, tmp_path):
    tool = _tool()
    src = _write_vizier_tsv(nvss, tmp_path / "nvss.tsv")
    known = SkyCoord(nvss["ra_deg"] * u.deg, nvss["dec_deg"] * u.deg)
    cases = [(CENTRE, 4.0, 10.0), (CENTRE, 6.5, 0.0), ((0.1, 0.0), 0.5, 3.0), (CENTRE, 4.0, 250.0)]
    for (ra0, dec0), radius, min_mjy in cases:
        sep = known.separation(SkyCoord(ra0 * u.deg, dec0 * u.deg)).deg
        want = (sep <= radius) & (nvss["mjy"] >= min_mjy)
        assert 0 < want.sum() < len(want), "a case that selects nothing or everything tests nothing"
        out = tmp_path / "cone.csv"
        n = tool.convert(src, out, ra_deg=ra0, dec_deg=dec0, radius_deg=radius, min_flux_mjy=min_mjy)
        cat = load_catalogue(out)
        assert n == len(cat) == want.sum(), (ra0, dec0, radius, min_mjy)
        assert set(cat.name) == {"NVSS J" + nm for nm, w in zip(nvss["name"], want) if w}
    # flux cut alone, at a value some rows equal exactly (10.0 mJy kept, 9.9 dropped)
    n = tool.convert(src, tmp_path / "bright.csv", min_flux_mjy=10.0)
    assert n == int((nvss["mjy"] >= 10.0).sum()) and n < len(nvss["mjy"])
    assert "NVSS J" + nvss["name"][0] in set(load_catalogue(tmp_path / "bright.csv").name)


def test_command_line(nvss, tmp_path):
    src = _write_votable(_sexagesimal_table(nvss), tmp_path / "nvss.vot")
    out = tmp_path / "cat.csv"
    ra_h = f"{int(CENTRE[0] / 15):02d}:{(CENTRE[0] / 15 % 1) * 60:07.4f}"  # sexagesimal hours
    r = subprocess.run([sys.executable, str(TOOL), str(src), "-o", str(out), "--ra", ra_h, "--dec", str(CENTRE[1]),
                        "--radius", "4", "--min-flux-mjy", "10", "--spectral-index", "-0.8"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    sep = SkyCoord(nvss["ra_deg"] * u.deg, nvss["dec_deg"] * u.deg).separation(SkyCoord(*CENTRE, unit="deg")).deg
    want = int(((sep <= 4.0) & (nvss["mjy"] >= 10.0)).sum())
    cat = load_catalogue(out)
    assert len(cat) == want and f"{want} sources" in r.stdout
    assert np.all(cat.spectral_index == -0.8)
    bad = _write_vizier_tsv(nvss, tmp_path / "bad.tsv", columns=("RAJ2000", "DEJ2000", "NVSS"))
    r = subprocess.run([sys.executable, str(TOOL), str(bad), "-o", str(tmp_path / "x.csv")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and str(bad) in r.stderr and "S1.4" in r.stderr
    assert not (tmp_path / "x.csv").exists()


def test_load_catalogue_reads_fits_and_votable_with_aliases_units_defaults(nvss, tmp_path):
    # FITS: RA/DEC aliases in degrees, flux in mJy by its unit, no spectral index, REF_FREQ keyword
    t = Table()
    t["Source"] = Column(nvss["name"])
    t["RA"] = Column(nvss["ra_deg"], unit="deg")
    t["DEC"] = Column(nvss["dec_deg"], unit="deg")
    t["Total_flux"] = Column(nvss["mjy"], unit="mJy")
    hdu = fits.BinTableHDU(t)
    hdu.header["REF_FREQ"] = 3.0e9
    hdu.writeto(tmp_path / "cat.fits")
    cat = load_catalogue(tmp_path / "cat.fits")
    _check_positions(cat, nvss)
    assert np.array_equal(cat.flux_jy, nvss["mjy"] / 1000.0)
    assert cat.ref_freq_hz == 3.0e9 and DEFAULT_SPECTRAL_INDEX == -0.7
    assert np.all(cat.spectral_index == -0.7)

    # VOTable without an extension: sexagesimal strings, flux in Jy, spectral indices with a
    # blank cell (-> the default), no reference frequency anywhere (-> 1.4 GHz)
    t = _sexagesimal_table(nvss)["NVSS", "RAJ2000", "DEJ2000"]
    t["S1.4"] = Column(nvss["mjy"] / 1000.0, unit="Jy")
    alpha = np.linspace(-1.2, 0.3, len(t))
    t["alpha"] = np.ma.MaskedArray(alpha, mask=np.arange(len(t)) == 5)
    path = _write_votable(t, tmp_path / "catalogue_table")
    cat = load_catalogue(path)
    _check_positions(cat, nvss)
    assert np.array_equal(cat.flux_jy, nvss["mjy"] / 1000.0)
    assert cat.ref_freq_hz == DEFAULT_REF_FREQ_HZ == 1.4e9
    want_alpha = alpha.copy()
    want_alpha[5] = -0.7
    np.testing.assert_array_equal(cat.spectral_index, want_alpha)

    # the six canonical columns in a VOTable, reference frequency in MHz: read as written
    t = Table({"name": nvss["name"], "ra_deg": nvss["ra_deg"], "dec_deg": nvss["dec_deg"],
               "flux_jy": nvss["mjy"] / 1000.0, "spectral_index": alpha, "ref_freq_hz": np.full(len(alpha), 1400.0)})
    t["ref_freq_hz"].unit = "MHz"
    cat = load_catalogue(_write_votable(t, tmp_path / "six.vot"))
    assert cat.ref_freq_hz == 1.4e9 and list(cat.name) == nvss["name"]
    np.testing.assert_array_equal(np.degrees(cat.dec_rad), np.degrees(np.radians(nvss["dec_deg"])))

    # the CSV written from any of them reads back to the same numbers
    write_catalogue(tmp_path / "back.csv", cat)
    back = load_catalogue(tmp_path / "back.csv")
    for key in ("flux_jy", "spectral_index"):
        assert np.array_equal(getattr(back, key), getattr(cat, key))
    for key in ("ra_rad", "dec_rad"):  # through degrees and back: to the last bits
        np.testing.assert_allclose(getattr(back, key), getattr(cat, key), rtol=0, atol=1e-14)


def _check_positions(cat, k):
    dra = (np.degrees(cat.ra_rad) - k["ra_deg"] + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(dra, 0.0, atol=1e-6)
    np.testing.assert_allclose(np.degrees(cat.dec_rad), k["dec_deg"], rtol=0, atol=1e-6)


def test_errors_name_the_file_and_the_column(nvss, tmp_path):
    base = {"RA": Column(nvss["ra_deg"][:3], unit="deg"), "DEC": Column(nvss["dec_deg"][:3], unit="deg"),
            "flux": Column([1.0, 2.0, 3.0], unit="mJy")}

    def fits_file(name, **cols):
        t = Table({c: v for c, v in {**base, **cols}.items() if v is not None})
        path = tmp_path / name
        t.write(path, format="fits", overwrite=True)
        return path

    p = fits_file("noflux.fits", flux=None)
    with pytest.raises(ValueError, match=f"{p}.*column flux_jy"):
        load_catalogue(p)
    p = fits_file("nounit.fits", flux=Column([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=f"{p}.*column flux .*the flux_jy.*no unit"):
        load_catalogue(p)
    p = fits_file("badunit.fits", flux=Column([1.0, 2.0, 3.0], unit="mJy/beam"))
    with pytest.raises(ValueError, match=f"{p}.*column flux .*mJy / beam.*not a unit of Jy"):
        load_catalogue(p)
    p = fits_file("nan.fits", flux=Column([1.0, np.nan, 3.0], unit="Jy"))
    with pytest.raises(ValueError, match=f"{p}.*column flux .*data row 2"):
        load_catalogue(p)
    p = fits_file("dec.fits", DEC=Column([10.0, 95.0, 0.0], unit="deg"))
    with pytest.raises(ValueError, match=rf"{p}.*column DEC \(the dec_deg\), data row 2.*\[-90, 90\]"):
        load_catalogue(p)
    p = fits_file("rad.fits", RA=Column(np.radians(nvss["ra_deg"][:3]), unit="rad"))
    _check_positions(load_catalogue(p), {k: v[:3] for k, v in nvss.items() if k in ("ra_deg", "dec_deg")})

    t = _sexagesimal_table(nvss)[:3]
    t["RAJ2000"][1] = "13 9x 00.00"
    p = _write_votable(t, tmp_path / "badra.vot")
    with pytest.raises(ValueError, match=f"{p}.*column RAJ2000 .*data row 2.*not an angle"):
        load_catalogue(p)
    t = _sexagesimal_table(nvss)[:3]
    t["DEJ2000"] = np.ma.MaskedArray(t["DEJ2000"], mask=[False, False, True])
    p = _write_votable(t, tmp_path / "blankdec.vot")
    with pytest.raises(ValueError, match=f"{p}.*column DEJ2000 .*data row 3 is blank"):
        load_catalogue(p)

    p = tmp_path / "bad.csv"
    p.write_text("name,ra_deg,dec_deg,flux_jy,spectral_index,ref_freq_hz\nA,10,20,1,0,1.4e9\nB,10,91,1,0,1.4e9\n")
    with pytest.raises(ValueError, match=f"{p}.*column dec_deg, data row 2"):
        load_catalogue(p)
    p.write_text("name,ra_deg,dec_deg,flux_jy,spectral_index,ref_freq_hz\nA,10,20,-1,0,1.4e9\n")
    with pytest.raises(ValueError, match=f"{p}.*column flux_jy.*negative"):
        load_catalogue(p)
    p.write_text("name,ra_deg,dec_deg,flux_jy,spectral_index,ref_freq_hz\nA,10,20,1,0,1.4e9\nB,1,2,1,0,3e9\n")
    with pytest.raises(ValueError, match=f"{p}.*different ref_freq_hz"):
        load_catalogue(p)
    p = tmp_path / "garbage.vot"
    p.write_text('<?xml version="1.0"?>\n<VOTABLE><RESOURCE><TABLE>broken')
    with pytest.raises(ValueError, match=f"{p}.*votable"):
        load_catalogue(p)


# ---- the pipeline's own catalogue: association, position refinement, shapes, candidates -------

def test_associate_takes_the_nearest_within_the_radius_as_skycoord_does():
    from contimg.qa.sources import associate

    rng = np.random.default_rng(8)
    cat_ra, cat_dec = 180 + rng.uniform(-2, 2, 200), 31 + rng.uniform(-2, 2, 200)
    det_ra = np.concatenate([cat_ra[:50] + rng.normal(0, 10 / 3600, 50), 180 + rng.uniform(-2, 2, 30)])
    det_dec = np.concatenate([cat_dec[:50] + rng.normal(0, 10 / 3600, 50), 31 + rng.uniform(-2, 2, 30)])
    idx, sep = associate(cat_ra_deg=cat_ra, cat_dec_deg=cat_dec, ra_deg=det_ra, dec_deg=det_dec, radius_arcsec=60.0)
    cat = SkyCoord(cat_ra * u.deg, cat_dec * u.deg)
    for k in range(det_ra.size):  # brute force: every separation
        d = SkyCoord(det_ra[k] * u.deg, det_dec[k] * u.deg).separation(cat).arcsec
        j = int(np.argmin(d))
        takers = [m for m in range(det_ra.size) if idx[m] == j]
        if d[j] > 60.0:
            assert idx[k] == -1
        elif idx[k] == -1:  # lost the source to a nearer detection
            assert any(m != k for m in takers)
        else:
            assert idx[k] == j and sep[k] == pytest.approx(d[j], abs=1e-6)
    assert (idx[:50] == np.arange(50)).all()


def test_refined_position_is_the_inverse_variance_mean_and_converges():
    from contimg.qa.sources import refine_position

    rng = np.random.default_rng(2)
    truth = SkyCoord(150.0 * u.deg, 45.0 * u.deg)
    sigmas = rng.uniform(1.0, 6.0, 400)  # arcsec
    east, north = rng.normal(0, sigmas), rng.normal(0, sigmas)
    vec, weight = np.zeros(3), 0.0
    for e, n, s in zip(east, north, sigmas):
        det = truth.spherical_offsets_by(e * u.arcsec, n * u.arcsec)
        vec, weight, ra, dec, err = refine_position(sum_vec=vec, weight=weight, ra_deg=det.ra.deg, dec_deg=det.dec.deg,
                                                    sigma_arcsec=s)
    expected_err = 1 / np.sqrt(np.sum(1 / sigmas**2))
    assert err == pytest.approx(expected_err)
    w = 1 / sigmas**2
    mean = truth.spherical_offsets_by(np.sum(w * east) / w.sum() * u.arcsec, np.sum(w * north) / w.sum() * u.arcsec)
    assert SkyCoord(ra * u.deg, dec * u.deg).separation(mean).arcsec < 0.01 * expected_err
    assert SkyCoord(ra * u.deg, dec * u.deg).separation(truth).arcsec < 4 * expected_err


def test_fitted_shape_recovers_an_elliptical_gaussian():
    from contimg.imaging.restore import FWHM_PER_SIGMA, elliptical_gaussian
    from contimg.qa.sources import fit_shape

    cell = np.radians(3.0 / 3600)
    maj, mnr, pa = np.radians(40 / 3600), np.radians(18 / 3600), np.radians(30.0)
    yy, xx = np.mgrid[0:128, 0:128]
    x0, y0 = 63.3, 64.6
    image = 0.5 * elliptical_gaussian(-(xx - x0), yy - y0, maj / FWHM_PER_SIGMA / cell, mnr / FWHM_PER_SIGMA / cell, pa)
    beam = (np.radians(30 / 3600), np.radians(15 / 3600), 0.0)
    got = fit_shape(image=image, x=64.0, y=65.0, beam_rad=beam, cell_rad=cell)
    assert got[0] == pytest.approx(maj, rel=1e-3) and got[1] == pytest.approx(mnr, rel=1e-3)
    assert got[2] == pytest.approx(pa, abs=1e-3)


def test_transient_rise_and_variability_candidates():
    from contimg.qa.photometry import transient_rise, variability, variability_candidate

    assert np.isnan(transient_rise(flux_jy=1.0, err_jy=0.1, prior_flux_jy=np.zeros(0), prior_err_jy=np.zeros(0)))
    rise = transient_rise(flux_jy=1.0, err_jy=0.03, prior_flux_jy=np.array([0.0, 0.5]),
                          prior_err_jy=np.array([0.04, 0.04]))
    assert rise == pytest.approx(0.5 / 0.05)  # the smallest rise: over the brighter earlier flux
    steady = variability(flux_jy=np.array([1.0, 1.01, 0.99, 1.0]), err_jy=np.full(4, 0.02))
    flaring = variability(flux_jy=np.array([1.0, 3.0, 1.0]), err_jy=np.full(3, 0.02))
    kw = {"eta_threshold": 5.0, "v_threshold": 0.1, "min_points": 3}
    assert not variability_candidate(steady, **kw) and variability_candidate(flaring, **kw)
    assert not variability_candidate(flaring, **{**kw, "min_points": 4})


def test_candidate_verdicts_are_kept_when_an_image_is_searched_again(tmp_path):
    from contimg.state.catalogue import CatalogueDB

    db = CatalogueDB(tmp_path / "products.sqlite3")
    row = {"id": "g1#3", "image": "g1", "mid_mjd": 61000.1, "ra_deg": 10.0, "dec_deg": 20.0, "flux_jy": 0.1,
           "err_jy": 0.01, "snr": 12.0, "pb": 0.6, "prior": [{"image": "g0", "flux_jy": 0.0, "err_jy": 0.01}],
           "min_rise_sigma": 7.0, "cutout_path": "x.png", "source": "CTG J004000.0+200000"}
    db.record_candidate(row)
    assert db.candidates(status="new")[0]["prior"][0]["image"] == "g0"
    db.mark_candidate("g1#3", verdict="artefact", by="op", note="sidelobe")
    db.forget_image("g1")  # an image searched again keeps a marked candidate ...
    db.record_candidate(row)
    assert db.candidate("g1#3")["status"] == "artefact" and db.candidate("g1#3")["note"] == "sidelobe"
    assert db.candidates(status="new") == []
    with pytest.raises(ValueError):
        db.mark_candidate("g1#3", verdict="maybe")
    db.close()

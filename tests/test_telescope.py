import numpy as np
from astropy import units as u

from contimg.sky.calibrators import calibrator_by_name, vla_calibrators
from contimg.sky.telescope import active_station_numbers, array_location, stations


def test_active_stations_are_the_real_96():
    act = active_station_numbers() + 1  # station numbers
    assert act.size == 96
    assert not set(act) & ({10, 21, 22, 23, 117} | set(range(52, 68)))


def test_station_enu_round_trips_through_astropy():
    st = stations()
    # ENU -> geodetic of a station through astropy's own transforms agrees with the CSV
    from astropy.coordinates import EarthLocation

    back = EarthLocation.from_geocentric(*(st.ecef_m[5] * u.m))
    assert abs(back.lat.deg - 37.2333752) < 1e-7 and abs(back.lon.deg - (-118.2853168)) < 1e-7
    # an east-west arm: stations 1..6 lie along +E at ~5.75 m spacing (DSA-110 README)
    d = np.diff(st.enu_m[:6, 0])
    assert np.allclose(d, 5.75, atol=0.01) and np.allclose(np.diff(st.enu_m[:6, 1]), 0, atol=0.01)


def test_array_location_is_casacore_ovro_mma():
    from casacore.measures import measures

    dm = measures()
    obs = dm.observatory("OVRO_MMA")
    loc = array_location()
    assert abs(obs["m0"]["value"] - loc.lon.rad) < 1e-9 and abs(obs["m1"]["value"] - loc.lat.rad) < 1e-9


def test_calibrator_list_parsed():
    c = calibrator_by_name("3C286")
    assert c.name == "1331+305" and c.flux_jy == 15.0
    assert abs(np.degrees(c.ra_rad) - (13 + 31 / 60 + 8.287984 / 3600) * 15) < 1e-6
    assert len(vla_calibrators()) > 1000


def test_station_enu_is_pyuvdatas_rotation_of_the_csv():
    """`stations().enu_m` against pyuvdata's `ENU_from_ECEF` applied here to ECEF positions built
    independently (astropy `EarthLocation` of the CSV rows), and against the textbook rotation."""
    import csv
    from importlib import resources

    from astropy.coordinates import EarthLocation
    from pyuvdata.utils import ENU_from_ECEF

    from contimg.sky.telescope import ARRAY_HEIGHT_M, ARRAY_LAT_RAD, ARRAY_LON_RAD, MISSING_ELEVATION_M

    text = (resources.files("contimg") / "data" / "DSA110_Station_Coordinates.csv").read_text()
    rows = {int(r[1][4:]): r for r in csv.reader(text.splitlines()) if len(r) > 3 and r[1][:4] == "DSA-" and r[1][4:].isdigit()}
    assert sorted(rows) == list(range(1, 118))
    lat = [float(rows[n][2]) for n in sorted(rows)]
    lon = [float(rows[n][3]) for n in sorted(rows)]
    height = [float(rows[n][4]) if len(rows[n]) > 4 and rows[n][4].strip() else MISSING_ELEVATION_M
              for n in sorted(rows)]
    loc = EarthLocation.from_geodetic(lon=lon * u.deg, lat=lat * u.deg, height=height * u.m)
    ecef = np.stack([loc.x.to_value(u.m), loc.y.to_value(u.m), loc.z.to_value(u.m)], axis=-1)
    enu = ENU_from_ECEF(ecef, latitude=ARRAY_LAT_RAD, longitude=ARRAY_LON_RAD, altitude=ARRAY_HEIGHT_M)

    st = stations()
    assert np.allclose(st.ecef_m, ecef, rtol=0, atol=1e-6)
    assert np.allclose(st.enu_m, enu, rtol=0, atol=1e-6)
    # the textbook ECEF -> ENU rotation at the reference position (astropy's ECEF of it)
    ref = EarthLocation.from_geodetic(lon=np.degrees(ARRAY_LON_RAD) * u.deg, lat=np.degrees(ARRAY_LAT_RAD) * u.deg,
                                      height=ARRAY_HEIGHT_M * u.m)
    ref_xyz = np.array([ref.x.to_value(u.m), ref.y.to_value(u.m), ref.z.to_value(u.m)])
    sl, cl, so, co = np.sin(ARRAY_LAT_RAD), np.cos(ARRAY_LAT_RAD), np.sin(ARRAY_LON_RAD), np.cos(ARRAY_LON_RAD)
    rot = np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])
    assert np.allclose(st.enu_m, (ecef - ref_xyz) @ rot.T, rtol=0, atol=1e-6)
    assert np.abs(st.enu_m[:, 2]).max() < 50  # a flat site: every station within 50 m of the reference height

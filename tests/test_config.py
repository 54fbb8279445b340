import pytest

from contimg.config import ConfigError, load_config, packaged_config_names


def test_packaged_configs_load():
    assert set(packaged_config_names()) >= {"dsa110", "quick", "test"}
    dsa = load_config("dsa110", use_env=False)
    assert dsa.simulate.chans_per_subband == 48 and dsa.grouping.n_subbands == 16
    quick = load_config("quick", use_env=False)
    assert quick.image.npix <= 512 and quick.image.niter <= 300
    assert quick.simulate == dsa.simulate  # inherits the telescope from its base


def test_unknown_key_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "dsa110"\n[image]\nnpixx = 10\n')
    with pytest.raises(ConfigError, match=r"image\.npixx"):
        load_config(bad, use_env=False)


def test_bad_value_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[grouping]\non_bad_subband = "ignore"\n')
    with pytest.raises(ConfigError, match=r"grouping\.on_bad_subband"):
        load_config(bad, use_env=False)
    bad.write_text('[image]\nnpix = 511\n')
    with pytest.raises(ConfigError, match="npix must be even"):
        load_config(bad, use_env=False)


def test_env_override(monkeypatch):
    monkeypatch.setenv("CONTIMG__IMAGE__NITER", "17")
    assert load_config("test").image.niter == 17
    monkeypatch.setenv("CONTIMG__IMAGE__NOPE", "1")
    with pytest.raises(ConfigError, match=r"image\.nope"):
        load_config("test")


def test_astropy_is_offline_for_any_date():
    """Dates past the bundled IERS tables must not raise (DESIGN §9)."""
    from astropy.coordinates import AltAz, SkyCoord
    from astropy.time import Time
    from astropy.utils import iers

    from contimg.sky.telescope import array_location

    assert iers.conf.auto_download is False and iers.conf.auto_max_age is None
    t = Time("2031-06-01T00:00:00")
    altaz = SkyCoord(ra=10, dec=30, unit="deg").transform_to(AltAz(obstime=t, location=array_location()))
    assert -90 <= altaz.alt.deg <= 90


def test_configuration_reference_is_up_to_date():
    """docs/configuration.md is generated from the model; regenerate with tools/config_reference.py."""
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parent.parent / "tools" / "config_reference.py"
    assert subprocess.run([sys.executable, str(tool), "--check"]).returncode == 0

"""Make astropy's coordinate transforms work without a network, for any date.

With ``iers.conf.auto_download = False`` *and* ``iers.conf.auto_max_age = None`` astropy uses
its bundled IERS tables and extrapolates past their end instead of raising a ``ValueError``.
An operator can point at a fresh IERS-A file (``[astropy] iers_a_file``) for better UT1.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["configure_astropy_offline", "use_iers_a_file", "load_earth_orientation"]


def configure_astropy_offline() -> None:
    """Forbid astropy downloads and let it extrapolate the bundled Earth-orientation tables."""
    from astropy.utils import iers

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    iers.conf.iers_degraded_accuracy = "warn"


def use_iers_a_file(path: str | Path) -> None:
    """Use a local IERS-A file (e.g. ``finals2000A.all``) for UT1-UTC and polar motion."""
    from astropy.utils import iers

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"astropy.iers_a_file {path} does not exist")
    table = iers.IERS_A.open(str(path))
    iers.earth_orientation_table.set(table)
    log.info("using IERS-A table %s", path)


def load_earth_orientation() -> None:
    """Parse the Earth-orientation tables now (about a second of pure Python), not in the middle
    of the first group, where it would hold the GIL against the service's event loop."""
    from astropy.utils import iers

    iers.earth_orientation_table.get()
    iers.LeapSeconds.auto_open()

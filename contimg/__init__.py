"""contimg: real-time continuum imaging for a DSA-110-like array.

Importing the package makes astropy work offline (see `contimg.offline`).
"""

from contimg.offline import configure_astropy_offline

configure_astropy_offline()

__version__ = "0.1.0"

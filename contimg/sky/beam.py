"""The primary beam of a 4.65 m dish: an Airy pattern (uniformly illuminated aperture)."""

from __future__ import annotations

import numpy as np
from scipy.special import j1

from contimg.sky.geometry import C_M_S
from contimg.sky.telescope import DISH_DIAMETER_M

__all__ = ["airy_power"]


def airy_power(*, sin_theta: np.ndarray, freq_hz: np.ndarray,
               diameter_m: float = DISH_DIAMETER_M) -> np.ndarray:
    """Power beam ``(2 J1(x) / x)**2`` with ``x = pi D f sin(theta) / c``; 1 on axis.

    sin_theta and freq_hz broadcast against each other; returns float64 of the broadcast shape.
    """
    x = np.pi * diameter_m * np.asarray(freq_hz, float) / C_M_S * np.asarray(sin_theta, float)
    x_safe = np.where(np.abs(x) < 1e-12, 1.0, x)
    return np.where(np.abs(x) < 1e-12, 1.0, (2.0 * j1(x_safe) / x_safe) ** 2)

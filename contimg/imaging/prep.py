"""Visibilities ready for gridding: cross-correlations rephased from the drift (HA 0) phase
centre of each integration to one fixed ICRS phase centre, Stokes I = (XX + YY) / 2.

For baseline ``b`` (ENU), drift centre ``s0`` and new centre ``s1(t)`` (ENU unit vectors):
``V1 = V0 * exp(+2 pi i f/c * b . (s0 - s1))`` and ``uvw1 = b . (u_hat, v_hat, w_hat)`` of the
ICRS tangent basis at ``s1`` (see `contimg.sky.geometry`). uvw are recomputed in float64 from the
antenna positions, not taken from the files' float32 values.
"""

from __future__ import annotations

import numba
import numpy as np

from contimg.io.chunk import VisChunk
from contimg.sky.geometry import C_M_S, hadec_to_enu, icrs_basis

__all__ = ["rephase_stokes_i"]


@numba.njit(parallel=True, cache=True, nogil=True)
def _rephase_kernel(vis, flags, weights, delay_m, freq_hz, two_pi_over_c, out_vis, out_wgt):
    ntime, nbl, nchan, npol = vis.shape
    for tb in numba.prange(ntime * nbl):
        t = tb // nbl
        b = tb % nbl
        d = delay_m[t, b]
        for c in range(nchan):
            ph = two_pi_over_c * freq_hz[c] * d
            rot = np.cos(ph) + 1j * np.sin(ph)
            ok = True
            wsum = 0.0
            acc = 0j
            for p in range(npol):
                if flags[t, b, c, p] or weights[t, b, c, p] <= 0:
                    ok = False
                acc += vis[t, b, c, p]
                wsum += weights[t, b, c, p]
            if ok:
                out_vis[tb, c] = acc / npol * rot
                out_wgt[tb, c] = wsum
            else:
                out_vis[tb, c] = 0
                out_wgt[tb, c] = 0


def rephase_stokes_i(*, chunk: VisChunk, ra_rad: float, dec_rad: float,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stokes I cross-correlations towards the ICRS direction (ra, dec).

    Returns uvw (nrow, 3) float64 metres, vis (nrow, nchan) complex64 and weights
    (nrow, nchan) float32 (0 where either polarization is flagged), nrow = ntime * ncross,
    time-major.
    """
    cross = chunk.cross
    b_enu = chunk.antenna_enu_m[chunk.ant2[cross]] - chunk.antenna_enu_m[chunk.ant1[cross]]
    s0 = hadec_to_enu(ha_rad=0.0, dec_rad=chunk.pointing_dec_rad)
    basis = icrs_basis(ra_rad=ra_rad, dec_rad=dec_rad, time_jd=chunk.time_jd)  # (t, 3, 3)
    uvw = np.einsum("bk,tjk->tbj", b_enu, basis)
    delay = b_enu @ s0 - uvw[:, :, 2]  # b . (s0 - s1), (t, b)
    ntime, ncross, nchan = chunk.time_jd.size, b_enu.shape[0], chunk.freq_hz.size
    out_vis = np.empty((ntime * ncross, nchan), np.complex64)
    out_wgt = np.empty((ntime * ncross, nchan), np.float32)
    _rephase_kernel(chunk.vis[:, cross], chunk.flags[:, cross], chunk.weights[:, cross],
                    np.ascontiguousarray(delay), chunk.freq_hz, 2 * np.pi / C_M_S, out_vis, out_wgt)
    return uvw.reshape(-1, 3), out_vis, out_wgt

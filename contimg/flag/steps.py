"""The group-wide steps of `contimg.flag.flag_group`, twice: `ArraySteps` (array code on ``xp``:
CuPy on a device, numpy in the tests) and `HostSteps` (the numba twins of `contimg.flag.cpu`),
with the same arithmetic in the same order (tests/test_flag.py holds them bit-identical on the
host). Masks are (ntime, nbl, nchan, npol) bool; ``fx``, the cross-correlations' flags, is
(ntime, ncross, nchan, npol)."""

from __future__ import annotations

import numpy as np

from contimg.device.backend import to_host
from contimg.flag import cpu as _cpu
from contimg.flag import xp as _xp

__all__ = ["AVERAGE_CLIP", "ArraySteps", "HostSteps"]

AVERAGE_CLIP = 3.0  # one baseline's residual counts at most this many sigmas in the baseline average


_XP_BASELINES_PER_BATCH = 512  # device memory: ~15 float64 temporaries of (2 x 512, 24, 768) ~ 2.3 GB at real size


def _detect_xp(*, xp, vis, base, lo_t, hi_t, lo_f, hi_f, chis_t, chis_f, n_iter: int,
               factor_step: float, clip: float, batch: int = _XP_BASELINES_PER_BATCH):
    """`contimg.flag.xp.detect_slabs` on (ntime, nx, nchan, npol) data, in that layout, ``batch``
    baselines at a time (every slab is independent, so batching changes no number; it bounds
    the device memory of the all-slabs-at-once array code), and the baseline mean of the clipped
    residuals, each batch's sum added in order (`contimg.flag.cpu.detect`'s arithmetic; base:
    (ntime, nx, nchan, npol), the samples left out)."""
    ntime, nx, nchan, npol = vis.shape
    det = xp.empty(vis.shape, bool)
    total = xp.zeros((ntime, nchan, npol), xp.float64)
    count = xp.zeros((ntime, nchan, npol), xp.int64)
    for j0 in range(0, nx, batch):
        j1 = min(j0 + batch, nx)
        nb = j1 - j0
        planes = xp.ascontiguousarray(vis[:, j0:j1].transpose(1, 3, 0, 2)).reshape(nb * npol, ntime, nchan)
        amp = xp.sqrt(planes.real.astype(xp.float64) ** 2 + planes.imag.astype(xp.float64) ** 2)
        del planes
        valid = ~xp.ascontiguousarray(base[:, j0:j1].transpose(1, 3, 0, 2)).reshape(nb * npol, ntime, nchan)
        d, zz = _xp.detect_slabs(xp=xp, amp=amp, valid=valid, lo_t=xp.asarray(lo_t), hi_t=xp.asarray(hi_t),
                                 lo_f=xp.asarray(lo_f), hi_f=xp.asarray(hi_f), chis_t=chis_t, chis_f=chis_f,
                                 n_iter=n_iter, factor_step=factor_step)
        det[:, j0:j1] = d.reshape(nb, npol, ntime, nchan).transpose(2, 0, 3, 1)
        z = xp.ascontiguousarray(zz.reshape(nb, npol, ntime, nchan).transpose(2, 0, 3, 1))  # sums in baseline order
        ok = ~base[:, j0:j1]
        count += ok.sum(axis=1)
        total += xp.where(ok, xp.clip(z, -clip, clip), 0).sum(axis=1, dtype=xp.float64)
        del amp, valid, d, zz, z, ok
    return det, xp.where(count > 0, total / xp.maximum(count, 1), 0.0), count


def _dilate_xp(*, xp, mask, eta: float):
    ntime, nx, nchan, npol = mask.shape
    planes = xp.ascontiguousarray(mask.transpose(1, 3, 0, 2)).reshape(nx * npol, ntime, nchan)
    out = _xp.sir_dilate(xp=xp, mask=planes, eta=eta, axis=1) | _xp.sir_dilate(xp=xp, mask=planes, eta=eta, axis=2)
    return xp.ascontiguousarray(out.reshape(nx, npol, ntime, nchan).transpose(2, 0, 3, 1))


class ArraySteps:
    """The steps as array code on ``xp``; ``cross_d``/``auto_d``: the cross- and
    autocorrelations' baseline indices on the same device as the data."""

    def __init__(self, *, xp, cross_d, auto_d):
        self.xp, self.cross_d, self.auto_d = xp, cross_d, auto_d

    def _n_cross(self, mask) -> int:
        """Samples of a full (ntime, nbl, …) mask that are True on cross-correlations."""
        return int(self.xp.count_nonzero(mask)) - int(self.xp.count_nonzero(mask[:, self.auto_d]))

    def initial_flags(self, *, vis, flags, keep: bool):
        """(the files' flags (or none) | zeros and non-finite values, n input, n invalid) on
        the cross-correlations."""
        xp = self.xp
        base = xp.asarray(flags).copy() if keep else xp.zeros(vis.shape, bool)
        n_input = self._n_cross(base)
        invalid = (vis == 0) | ~xp.isfinite(vis)
        invalid &= ~base
        n_invalid = self._n_cross(invalid)
        base |= invalid
        return base, n_input, n_invalid

    def detect(self, *, vis, base, lo_t, hi_t, lo_f, hi_f, chis_t, chis_f, n_iter: int, factor_step: float,
               clip: float):
        """(SumThreshold detections on the cross-correlations, (ntime, nx, nchan, npol); the
        mean over the good cross-correlations of the residuals in robust sigmas clipped to
        ±clip and its count, each (ntime, nchan, npol))."""
        return _detect_xp(xp=self.xp, vis=vis[:, self.cross_d], base=base[:, self.cross_d], lo_t=lo_t, hi_t=hi_t,
                          lo_f=lo_f, hi_f=hi_f, chis_t=chis_t, chis_f=chis_f, n_iter=n_iter, factor_step=factor_step,
                          clip=clip)

    def combine_and_dilate(self, *, det, base, combine: bool, eta: float):
        """(fx, samples the detections added to the input flags) after OR-ing the
        polarizations and the rank dilation."""
        xp = self.xp
        if combine:
            det = xp.broadcast_to(det.any(axis=3, keepdims=True), det.shape).copy()
        if eta > 0:
            det = _dilate_xp(xp=xp, mask=det, eta=eta)
        base_x = base[:, self.cross_d]
        det &= ~base_x
        return base_x | det, int(xp.count_nonzero(det))

    def count_axes(self, mask):
        """(over channels (ntime, nbl, npol), over times (nbl, nchan, npol)) flagged counts."""
        return mask.sum(axis=2), mask.sum(axis=0)

    def cross_counts(self, mask):
        """Flagged samples of the cross-correlations' mask (ntime, nx, nchan, npol): per
        baseline (nx,) and per (time, channel) (ntime, nchan), where the mask lives."""
        return mask.sum(axis=(0, 2, 3)), mask.sum(axis=(1, 3))

    def or_broadcast(self, mask, *, tbp=None, bcp=None, tcp=None, t=None, c=None) -> int:
        """Flag, in place, the samples of ``mask`` whose (time, baseline, pol), (baseline,
        channel, pol), (time, channel, pol), time or channel is flagged in the given arrays;
        returns how many were new."""
        xp = self.xp
        before = int(xp.count_nonzero(mask))
        if tbp is not None:
            mask |= xp.asarray(tbp)[:, :, None, :]
        if bcp is not None:
            mask |= xp.asarray(bcp)[None]
        if tcp is not None:
            mask |= xp.asarray(tcp)[:, None]
        if t is not None:
            mask |= xp.asarray(t)[:, None, None, None]
        if c is not None:
            mask |= xp.asarray(c)[None, None, :, None]
        return int(xp.count_nonzero(mask)) - before


class HostSteps:
    """The same steps as numba twins on the host; ``cross`` (nbl,) bool, ``cross_idx`` its indices."""

    def __init__(self, *, cross: np.ndarray, cross_idx: np.ndarray):
        self.cross, self.cross_idx = cross, cross_idx

    def initial_flags(self, *, vis, flags, keep: bool):
        return _cpu.initial_flags(vis=vis, flags=flags, keep=keep, cross=self.cross)

    def detect(self, *, vis, base, lo_t, hi_t, lo_f, hi_f, chis_t, chis_f, n_iter: int, factor_step: float,
               clip: float):
        return _cpu.detect(vis=vis, base=base, cross_idx=self.cross_idx, lo_t=lo_t, hi_t=hi_t, lo_f=lo_f, hi_f=hi_f,
                           chis_t=chis_t, chis_f=chis_f, n_iter=n_iter, factor_step=factor_step, clip=clip,
                           block=_XP_BASELINES_PER_BATCH)

    def combine_and_dilate(self, *, det, base, combine: bool, eta: float):
        return _cpu.combine_and_dilate(det=det, base=base, cross_idx=self.cross_idx, combine=combine, eta=eta)

    def count_axes(self, mask):
        return _cpu.count_axes(mask)

    def cross_counts(self, mask):
        return _cpu.cross_counts(mask, np.arange(mask.shape[1]))

    def or_broadcast(self, mask, *, tbp=None, bcp=None, tcp=None, t=None, c=None) -> int:
        def host(a):
            return None if a is None else to_host(a)
        return _cpu.or_broadcast(mask, tbp=host(tbp), bcp=host(bcp), tcp=host(tcp), t=host(t), c=host(c))

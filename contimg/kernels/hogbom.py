"""Högbom CLEAN minor cycle on the active set, in one thread block (numba-cuda): no host round
trip per iteration (`contimg.imaging.clean._minor_device` launches it once per minor cycle).

The same source runs on a device (CuPy arrays) and, in CI, under numba-cuda's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, numpy arrays; tests/test_kernels.py holds it to the twin there).

Twin: `contimg.imaging.clean._minor` (numba), same arithmetic in float64: each iteration finds
the active pixel of largest |residual| (the first index among equal values), stops when there is
none or it is <= stop, adds gain * residual to the model there and subtracts gain * residual *
psf (shifted to that pixel) from every active residual. The peak is found by a block reduction
in shared memory; the launch's ``blockDim.x`` must be a power of two no larger than THREADS.

ys, xs: (n,) int64 pixel of each active value; vals: (n,) float64 residuals (updated in place);
psf: (psf_ny, psf_nx) float32 (as the imagers make it; the products are float64), peak at
(psf_ny/2, psf_nx/2); model: (ny, nx) float64; done: (1,) int32, the components made.
"""

from __future__ import annotations

from numba import cuda, float64, int32

__all__ = ["THREADS", "hogbom"]

THREADS = 1024  # the largest block (the shared reduction arrays' size)


@cuda.jit
def hogbom(ys, xs, vals, psf, model, gain, stop, niter, done):
    sbest = cuda.shared.array(THREADS, float64)
    sidx = cuda.shared.array(THREADS, int32)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n = vals.shape[0]
    cy = psf.shape[0] // 2
    cx = psf.shape[1] // 2
    count = 0
    for _ in range(niter):
        best = 0.0
        k = -1
        for i in range(t, n, nt):
            a = abs(vals[i])
            if a > best:
                best = a
                k = i
        sbest[t] = best
        sidx[t] = k
        cuda.syncthreads()
        s = nt // 2
        while s > 0:
            if t < s:
                b = sbest[t + s]
                kb = sidx[t + s]
                if kb >= 0 and (b > sbest[t] or (b == sbest[t] and (sidx[t] < 0 or kb < sidx[t]))):
                    sbest[t] = b
                    sidx[t] = kb
            cuda.syncthreads()
            s //= 2
        best = sbest[0]
        k = sidx[0]
        if k < 0 or best <= stop:
            break  # the same values in every thread: the block leaves together
        step = gain * vals[k]
        py = ys[k]
        px = xs[k]
        cuda.syncthreads()  # every thread has read vals[k] and sbest[0] before they change
        if t == 0:
            model[py, px] += step
        for i in range(t, n, nt):
            dy = ys[i] - py + cy
            dx = xs[i] - px + cx
            if 0 <= dy < psf.shape[0] and 0 <= dx < psf.shape[1]:
                vals[i] -= step * float64(psf[dy, dx])
        cuda.syncthreads()
        count += 1
    if t == 0:
        done[0] = count

// Högbom CLEAN minor cycle on the active set, in one thread block: no host round trip per
// iteration (contimg/imaging/clean.py `_minor_device` launches it once per minor cycle).
//
// Twin: contimg/imaging/clean.py `_minor` (numba), same arithmetic in float64:
// each iteration finds the active pixel of largest |residual| (the first index among equal
// values), stops when there is none or it is <= stop, adds gain * residual to the model there
// and subtracts gain * residual * psf (shifted to that pixel) from every active residual.
// The peak is found by a block reduction in shared memory; THREADS must be the launch's
// blockDim.x (a power of two).
//
// ys, xs: (n,) int64 pixel of each active value; vals: (n,) float64 residuals (updated in
// place); psf: (psf_ny, psf_nx) float32 (as the imagers make it; the products are float64),
// peak at (psf_ny/2, psf_nx/2); model: (ny, nx) float64.

#ifndef THREADS
#define THREADS 1024
#endif

extern "C" __global__ void hogbom(const long long* __restrict__ ys, const long long* __restrict__ xs,
                                  double* __restrict__ vals, const int n,
                                  const float* __restrict__ psf, const int psf_ny, const int psf_nx,
                                  double* __restrict__ model, const int nx,
                                  const double gain, const double stop, const int niter,
                                  int* __restrict__ done_out)
{
    __shared__ double sbest[THREADS];
    __shared__ int sidx[THREADS];
    const int t = threadIdx.x;
    const long long cy = psf_ny / 2, cx = psf_nx / 2;
    int done = 0;
    for (int it = 0; it < niter; ++it) {
        double best = 0.0;
        int k = -1;
        for (int i = t; i < n; i += THREADS) {
            const double a = fabs(vals[i]);
            if (a > best) { best = a; k = i; }
        }
        sbest[t] = best;
        sidx[t] = k;
        __syncthreads();
        for (int s = THREADS / 2; s > 0; s >>= 1) {
            if (t < s) {
                const double b = sbest[t + s];
                const int kb = sidx[t + s];
                if (kb >= 0 && (b > sbest[t] || (b == sbest[t] && (sidx[t] < 0 || kb < sidx[t])))) {
                    sbest[t] = b;
                    sidx[t] = kb;
                }
            }
            __syncthreads();
        }
        best = sbest[0];
        k = sidx[0];
        if (k < 0 || best <= stop) break;  // the same value in every thread: the block leaves together
        const double step = gain * vals[k];
        const long long py = ys[k], px = xs[k];
        __syncthreads();  // every thread has read vals[k] and sbest[0] before they change
        if (t == 0) model[py * nx + px] += step;
        for (int i = t; i < n; i += THREADS)
            vals[i] -= step * (double)psf[(ys[i] - py + cy) * psf_nx + (xs[i] - px + cx)];
        __syncthreads();
        ++done;
    }
    if (t == 0) *done_out = done;
}

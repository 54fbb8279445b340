// w-stacking gridder, one w plane per launch (contimg.imaging.wgrid_gpu drives these).
//
// Twins: contimg/imaging/wgrid.py `_grid_plane` and `_degrid_plane` (numba), same arithmetic:
// a visibility n has start cells (iu[n], iv[n], iw[n]) and offsets (fu, fv, fw) in
// (-W/2, 1 - W/2]; its kernel weights are phi((f + i) / (W/2)), i = 0 .. W-1, with
// phi(z) = exp(beta (sqrt(1 - z^2) - 1)). The grid is (g, g) complex64, [v][u], indices mod g.
//
// Work distribution: the visibilities are sorted by (iw, tile), a tile being TILE x TILE grid
// cells of the start cell (iv mod g, iu mod g), and each (iw, tile) bucket is cut into chunks of
// at most CHUNK visibilities (a dense tile near the uv origin holds a few per cent of all
// visibilities: one block for it would leave the other multiprocessors idle). Chunk c covers
// sorted visibilities [chunk_start[c], chunk_end[c]) of tile chunk_tile[c] and first plane
// chunk_jstart[c]; chunks are ordered by that plane. For plane j a launch has one block per
// chunk whose first plane is j-W+1 … j (blockIdx.x + first_chunk). Gridding accumulates in shared
// memory over the tile and its halo (TILE + W - 1 cells a side) and adds that to the global grid
// with atomics once; degridding loads the same region of the grid into shared memory and each
// thread sums its visibility's W x W cells (a visibility is in one chunk: no atomics on the output).
//
// Compile-time constants (nvrtc -D): TILE (cells, default 32), MAXW (largest support, 8).
// The chunk size is the host's (contimg.imaging.wgrid_gpu.CHUNK).

#ifndef TILE
#define TILE 32
#endif
#ifndef MAXW
#define MAXW 8
#endif
#define SIDE_MAX (TILE + MAXW - 1)

__device__ __forceinline__ void es_weights(float f, int support, float beta, float* out)
{
    const float half = 0.5f * support;
    for (int i = 0; i < MAXW; ++i) {
        if (i >= support) break;
        const float z = (f + i) / half;
        const float z2 = z * z;
        out[i] = z2 < 1.0f ? expf(beta * (sqrtf(1.0f - z2) - 1.0f)) : 0.0f;
    }
}

__device__ __forceinline__ int wrap(int i, int g)
{
    int r = i % g;
    return r < 0 ? r + g : r;
}

// Visibility n's kernel weights along u, v and w.
__device__ __forceinline__ void vis_weights(long long n, const float* fu, const float* fv, const float* fw,
                                            int support, float beta, float* ku, float* kv, float* kw)
{
    es_weights(fw[n], support, beta, kw);
    es_weights(fu[n], support, beta, ku);
    es_weights(fv[n], support, beta, kv);
}

// What a block works on: chunk c's visibilities [b0, b1), the plane's index in their w support,
// and the first grid cell (u0, v0) of their tile.
struct Chunk {
    long long b0, b1;
    int dj, u0, v0;
};

__device__ __forceinline__ Chunk chunk_of(long long c, const int* chunk_tile, const long long* chunk_start,
                                          const long long* chunk_end, const int* chunk_jstart,
                                          int ntile_side, int plane)
{
    const int tile = chunk_tile[c];
    Chunk k;
    k.b0 = chunk_start[c];
    k.b1 = chunk_end[c];
    k.dj = plane - chunk_jstart[c];  // 0 .. support-1 by the launch's choice of chunks
    k.u0 = (tile % ntile_side) * TILE;
    k.v0 = (tile / ntile_side) * TILE;
    return k;
}

extern "C" __global__ void grid_plane(float2* __restrict__ grid, const int g,
                                      const int* __restrict__ iu, const float* __restrict__ fu,
                                      const int* __restrict__ iv, const float* __restrict__ fv,
                                      const float* __restrict__ fw,
                                      const float2* __restrict__ vals,
                                      const int* __restrict__ chunk_tile, const long long* __restrict__ chunk_start,
                                      const long long* __restrict__ chunk_end, const int* __restrict__ chunk_jstart,
                                      const long long first_chunk, const int ntile_side,
                                      const int plane, const int support, const float beta)
{
    const Chunk ck = chunk_of(first_chunk + blockIdx.x, chunk_tile, chunk_start, chunk_end, chunk_jstart,
                              ntile_side, plane);
    const long long b0 = ck.b0, b1 = ck.b1;
    const int dj = ck.dj, u0 = ck.u0, v0 = ck.v0;
    const int side = TILE + support - 1;
    __shared__ float2 acc[SIDE_MAX * SIDE_MAX];
    for (int k = threadIdx.x; k < side * side; k += blockDim.x) acc[k] = make_float2(0.0f, 0.0f);
    __syncthreads();

    float ku[MAXW], kv[MAXW], kw[MAXW];
    for (long long n = b0 + threadIdx.x; n < b1; n += blockDim.x) {
        vis_weights(n, fu, fv, fw, support, beta, ku, kv, kw);
        const float2 v = vals[n];
        const float2 val = make_float2(v.x * kw[dj], v.y * kw[dj]);
        const int du = wrap(iu[n], g) - u0, dv = wrap(iv[n], g) - v0;  // 0 .. TILE-1
        for (int a = 0; a < support; ++a) {
            float2* rowp = acc + (dv + a) * side + du;
            const float ra = val.x * kv[a], ia = val.y * kv[a];
            for (int b = 0; b < support; ++b) {
                atomicAdd(&rowp[b].x, ra * ku[b]);
                atomicAdd(&rowp[b].y, ia * ku[b]);
            }
        }
    }
    __syncthreads();
    for (int k = threadIdx.x; k < side * side; k += blockDim.x) {
        const float2 c = acc[k];
        if (c.x == 0.0f && c.y == 0.0f) continue;
        float2* cell = grid + (long long)wrap(v0 + k / side, g) * g + wrap(u0 + k % side, g);
        atomicAdd(&cell->x, c.x);
        atomicAdd(&cell->y, c.y);
    }
}

extern "C" __global__ void degrid_plane(const float2* __restrict__ grid, const int g,
                                        const int* __restrict__ iu, const float* __restrict__ fu,
                                        const int* __restrict__ iv, const float* __restrict__ fv,
                                        const float* __restrict__ fw,
                                        float2* __restrict__ out,
                                        const int* __restrict__ chunk_tile, const long long* __restrict__ chunk_start,
                                        const long long* __restrict__ chunk_end, const int* __restrict__ chunk_jstart,
                                        const long long first_chunk, const int ntile_side,
                                        const int plane, const int support, const float beta)
{
    const Chunk ck = chunk_of(first_chunk + blockIdx.x, chunk_tile, chunk_start, chunk_end, chunk_jstart,
                              ntile_side, plane);
    const long long b0 = ck.b0, b1 = ck.b1;
    const int dj = ck.dj, u0 = ck.u0, v0 = ck.v0;
    const int side = TILE + support - 1;
    __shared__ float2 region[SIDE_MAX * SIDE_MAX];
    for (int k = threadIdx.x; k < side * side; k += blockDim.x)
        region[k] = grid[(long long)wrap(v0 + k / side, g) * g + wrap(u0 + k % side, g)];
    __syncthreads();

    float ku[MAXW], kv[MAXW], kw[MAXW];
    for (long long n = b0 + threadIdx.x; n < b1; n += blockDim.x) {
        vis_weights(n, fu, fv, fw, support, beta, ku, kv, kw);
        const int du = wrap(iu[n], g) - u0, dv = wrap(iv[n], g) - v0;
        float sr = 0.0f, si = 0.0f;
        for (int a = 0; a < support; ++a) {
            const float2* rowp = region + (dv + a) * side + du;
            float rr = 0.0f, ri = 0.0f;
            for (int b = 0; b < support; ++b) {
                rr += rowp[b].x * ku[b];
                ri += rowp[b].y * ku[b];
            }
            sr += rr * kv[a];
            si += ri * kv[a];
        }
        out[n].x += sr * kw[dj];
        out[n].y += si * kw[dj];
    }
}

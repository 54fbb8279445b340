"""w-stacking gridder kernels, one w plane per launch (numba-cuda; `contimg.imaging.wgrid_gpu`
launches them).

The same source runs on a device (CuPy arrays, through ``__cuda_array_interface__``) and, in CI,
under numba-cuda's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, numpy arrays;
tests/test_kernels.py holds it to the twins there).

Twins: `contimg.imaging.wgrid._grid_plane` and `_degrid_plane` (numba), same arithmetic: a
visibility n has start cells (iu[n], iv[n], iw[n]) and offsets (fu, fv, fw) in (-W/2, 1 - W/2];
its kernel weights are phi((f + i) / (W/2)), i = 0 … W-1, with phi(z) = exp(beta (sqrt(1 - z²)
- 1)). The grid is (g, g) complex64, [v][u], indices mod g; the kernels take it as its float32
view (g, 2g) (real, imaginary interleaved: atomics are on float32), and the visibilities as
float32 views (2 nvis,) of complex64 arrays.

Work distribution: the visibilities are sorted by (iw, tile), a tile being TILE x TILE grid cells
of the start cell (iv mod g, iu mod g), and each (iw, tile) bucket is cut into chunks of at most
`contimg.imaging.wgrid_gpu.CHUNK` visibilities (a dense tile near the uv origin holds a few per
cent of all visibilities: one block for it would leave the other multiprocessors idle). Chunk c
covers sorted visibilities [chunk_start[c], chunk_end[c]) of tile chunk_tile[c] and first plane
chunk_jstart[c]; chunks are ordered by that plane. For plane j a launch has one block per chunk
whose first plane is j-W+1 … j (blockIdx.x + first_chunk). Gridding accumulates in shared memory
over the tile and its halo (TILE + W - 1 cells a side) and adds that to the global grid with
atomics once; degridding loads the same region of the grid into shared memory and each thread
sums its visibility's W x W cells (a visibility is in one chunk: no atomics on the output).
Any block size works (the loops stride by ``blockDim.x``).
"""

from __future__ import annotations

import math

from numba import cuda, float32

__all__ = ["TILE", "MAXW", "grid_plane", "degrid_plane"]

TILE = 32  # grid cells a tile side
MAXW = 8  # largest kernel support
SIDE_MAX = TILE + MAXW - 1
_SHARED = 2 * SIDE_MAX * SIDE_MAX  # float32 values of the shared (side, side) complex region


@cuda.jit(device=True, inline=True)
def _es_weights(f, support, beta, out):
    """out[i] = phi((f + i) / (W/2)), i < support (float32 arithmetic)."""
    half = float32(0.5) * float32(support)
    for i in range(support):
        z = (f + float32(i)) / half
        z2 = z * z
        if z2 < float32(1.0):
            out[i] = math.exp(beta * (math.sqrt(float32(1.0) - z2) - float32(1.0)))
        else:
            out[i] = float32(0.0)


@cuda.jit(device=True, inline=True)
def _wrap(i, g):
    """i mod g in 0 … g-1 (numba's % of integers takes the divisor's sign, as Python's)."""
    return i % g


@cuda.jit(device=True, inline=True)
def _block_chunk(chunk_tile, chunk_start, chunk_end, chunk_jstart, first_chunk, ntile_side, plane):
    """This block's chunk: (first visibility, end, its w kernel row dj for ``plane``, the tile's
    first u and v cells)."""
    c = first_chunk + cuda.blockIdx.x
    tile = chunk_tile[c]
    return (chunk_start[c], chunk_end[c], plane - chunk_jstart[c],  # dj: 0 … support-1 by the launch's choice
            (tile % ntile_side) * TILE, (tile // ntile_side) * TILE)


@cuda.jit(device=True, inline=True)
def _kernel_rows(n, fu, fv, fw, support, beta, ku, kv, kw):
    """The kernel's weights along u, v and w at visibility ``n``."""
    _es_weights(fw[n], support, beta, kw)
    _es_weights(fu[n], support, beta, ku)
    _es_weights(fv[n], support, beta, kv)


@cuda.jit
def grid_plane(grid, iu, fu, iv, fv, fw, vals, chunk_tile, chunk_start, chunk_end, chunk_jstart, first_chunk,
               ntile_side, plane, support, beta):
    """Add plane ``plane``'s share of the chunks' visibilities to ``grid`` (g, 2g) float32.
    vals: (2 nvis,) float32 (complex64 viewed); the rest as the module says."""
    g = grid.shape[0]
    b0, b1, dj, u0, v0 = _block_chunk(chunk_tile, chunk_start, chunk_end, chunk_jstart, first_chunk, ntile_side,
                                      plane)
    side = TILE + support - 1
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    acc = cuda.shared.array(_SHARED, float32)
    for k in range(t, 2 * side * side, nt):
        acc[k] = float32(0.0)
    cuda.syncthreads()

    ku = cuda.local.array(MAXW, float32)
    kv = cuda.local.array(MAXW, float32)
    kw = cuda.local.array(MAXW, float32)
    for n in range(b0 + t, b1, nt):
        _kernel_rows(n, fu, fv, fw, support, beta, ku, kv, kw)
        vr = vals[2 * n] * kw[dj]
        vi = vals[2 * n + 1] * kw[dj]
        du = _wrap(iu[n], g) - u0  # 0 … TILE-1
        dv = _wrap(iv[n], g) - v0
        for a in range(support):
            row = 2 * ((dv + a) * side + du)
            ra = vr * kv[a]
            ia = vi * kv[a]
            for b in range(support):
                cuda.atomic.add(acc, row + 2 * b, ra * ku[b])
                cuda.atomic.add(acc, row + 2 * b + 1, ia * ku[b])
    cuda.syncthreads()
    for k in range(t, side * side, nt):
        cr = acc[2 * k]
        ci = acc[2 * k + 1]
        if cr == 0 and ci == 0:
            continue
        y = _wrap(v0 + k // side, g)
        x = _wrap(u0 + k % side, g)
        cuda.atomic.add(grid, (y, 2 * x), cr)
        cuda.atomic.add(grid, (y, 2 * x + 1), ci)


@cuda.jit
def degrid_plane(grid, iu, fu, iv, fv, fw, out, chunk_tile, chunk_start, chunk_end, chunk_jstart, first_chunk,
                 ntile_side, plane, support, beta):
    """``out`` (2 nvis,) float32 (complex64 viewed) += plane ``plane``'s share of ``grid``
    (g, 2g) float32 at each of the chunks' visibilities."""
    g = grid.shape[0]
    b0, b1, dj, u0, v0 = _block_chunk(chunk_tile, chunk_start, chunk_end, chunk_jstart, first_chunk, ntile_side,
                                      plane)
    side = TILE + support - 1
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    region = cuda.shared.array(_SHARED, float32)
    for k in range(t, side * side, nt):
        y = _wrap(v0 + k // side, g)
        x = _wrap(u0 + k % side, g)
        region[2 * k] = grid[y, 2 * x]
        region[2 * k + 1] = grid[y, 2 * x + 1]
    cuda.syncthreads()

    ku = cuda.local.array(MAXW, float32)
    kv = cuda.local.array(MAXW, float32)
    kw = cuda.local.array(MAXW, float32)
    for n in range(b0 + t, b1, nt):
        _kernel_rows(n, fu, fv, fw, support, beta, ku, kv, kw)
        du = _wrap(iu[n], g) - u0
        dv = _wrap(iv[n], g) - v0
        sr = float32(0.0)
        si = float32(0.0)
        for a in range(support):
            row = 2 * ((dv + a) * side + du)
            rr = float32(0.0)
            ri = float32(0.0)
            for b in range(support):
                rr += region[row + 2 * b] * ku[b]
                ri += region[row + 2 * b + 1] * ku[b]
            sr += rr * kv[a]
            si += ri * kv[a]
        out[2 * n] += sr * kw[dj]
        out[2 * n + 1] += si * kw[dj]

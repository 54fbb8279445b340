"""The device half of `contimg.imaging.wgrid`: visibilities sorted into tiles and cut into
chunks, and the numba-cuda kernels ``grid_plane``/``degrid_plane`` of `contimg.kernels.wgrid`
launched one w plane at a time, one block per chunk.

`arrange` is array code (numpy or cupy): it reorders a `Prepared` by (first w plane, tile) and
adds the chunk table the kernels read. `plane_grid`/`plane_degrid` launch the kernels on the
arrays they are given: CuPy arrays on a device, or numpy arrays under numba-cuda's CUDA
simulator, which is how CI executes the kernels' own source (tests/test_kernels.py).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from contimg.imaging.wgrid_plan import GridPlan, Prepared

__all__ = ["TILE", "THREADS", "CHUNK", "Tiled", "arrange", "launch_args", "plane_grid", "plane_degrid"]

TILE = 32  # grid cells a tile side (contimg.kernels.wgrid.TILE; tests/test_kernels.py checks they agree)
THREADS = 256  # threads a block (any number works; the simulator tests take fewer)
CHUNK = 2048  # visibilities a block at most


class Tiled(Prepared):
    """A `Prepared` sorted by (iw, tile), with the chunks the kernels take one per block:
    ``chunk_tile`` (int32), ``chunk_start``/``chunk_end`` (int64, [start, end) in the sorted
    arrays), ``chunk_jstart`` (int32, their first w plane), ordered by first plane, and
    ``first_chunk`` (host int64, nwstart + 1): the chunks of first plane j are
    first_chunk[j] … first_chunk[j + 1] - 1."""

    chunk_tile: object
    chunk_start: object
    chunk_end: object
    chunk_jstart: object
    first_chunk: np.ndarray
    ntile_side: int
    nwstart: int

    def chunk_window(self, plane: int, support: int) -> tuple[int, int]:
        """(first chunk, number of chunks) whose w support covers ``plane``: first planes
        plane - support + 1 … plane."""
        lo = min(max(plane - support + 1, 0), self.nwstart)
        hi = min(max(plane + 1, 0), self.nwstart)
        return int(self.first_chunk[lo]), int(self.first_chunk[hi] - self.first_chunk[lo])


def _chunks(bucket: np.ndarray, ntiles: int, nwstart: int) -> dict:
    """Cut each non-empty bucket (host int64 offsets, nwstart * ntiles + 1) into CHUNK pieces."""
    counts = np.diff(bucket)
    nz = np.flatnonzero(counts)
    pieces = (counts[nz] + CHUNK - 1) // CHUNK
    owner = np.repeat(nz, pieces)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    start = bucket[owner] + (np.arange(owner.size) - first) * CHUNK
    end = np.minimum(start + CHUNK, bucket[owner + 1])
    jstart = (owner // ntiles).astype(np.int32)
    return {"chunk_tile": (owner % ntiles).astype(np.int32), "chunk_start": start.astype(np.int64),
            "chunk_end": end.astype(np.int64), "chunk_jstart": jstart,
            "first_chunk": np.searchsorted(jstart, np.arange(nwstart + 1)).astype(np.int64)}


def arrange(plan: GridPlan, prep: Prepared, *, xp: ModuleType = np) -> Tiled:
    """Sort the visibilities by (first w plane, tile of their start cell) and cut them into
    chunks for the kernels. A tile is TILE x TILE cells at (tv, tu) = (iv mod g, iu mod g) //
    TILE. Array code; the chunk table is made on the host (one entry per non-empty bucket)."""
    g = plan.ngrid
    side = -(-g // TILE)
    ntiles = side * side
    nwstart = plan.nplanes - plan.support + 1
    tile = (xp.mod(prep.iv, g) // TILE).astype(xp.int64) * side + (xp.mod(prep.iu, g) // TILE)
    key = prep.iw.astype(xp.int64) * ntiles + tile
    order = xp.argsort(key, kind="stable") if xp is np else xp.argsort(key)
    key = key[order]
    bucket = xp.searchsorted(key, xp.arange(nwstart * ntiles + 1, dtype=xp.int64))
    host = _chunks(np.asarray(bucket.get() if hasattr(bucket, "get") else bucket, np.int64), ntiles, nwstart)
    fields = {f: getattr(prep, f)[order] for f in ("index", "iu", "fu", "iv", "fv", "iw", "fw", "conj",
                                                     "shift_phase")}
    out = Tiled(**fields)
    for name in ("chunk_tile", "chunk_start", "chunk_end", "chunk_jstart"):
        setattr(out, name, xp.asarray(host[name]))
    out.first_chunk, out.ntile_side, out.nwstart = host["first_chunk"], side, nwstart
    return out


def launch_args(plan: GridPlan, prep: Tiled, target, vis_or_out, j: int) -> tuple[int, tuple]:
    """(blocks, arguments) of plane ``j``'s launch of ``grid_plane`` / ``degrid_plane``: one block
    per chunk in the plane's window; ``target`` (g, g) and ``vis_or_out`` (nvis,) complex64 go in as
    float32 views."""
    first, count = prep.chunk_window(j, plan.support)
    return count, (target.view(np.float32), prep.iu, prep.fu, prep.iv, prep.fv, prep.fw, vis_or_out.view(np.float32),
                   prep.chunk_tile, prep.chunk_start, prep.chunk_end, prep.chunk_jstart, np.int64(first),
                   np.int32(prep.ntile_side), np.int32(j), np.int32(plan.support), np.float32(plan.beta))


def _launch(name: str, plan: GridPlan, prep: Tiled, target, vis_or_out, j: int) -> None:
    blocks, args = launch_args(plan, prep, target, vis_or_out, j)
    if blocks == 0:
        return
    from contimg.kernels import wgrid as kernels  # numba.cuda: imported only where a kernel runs

    getattr(kernels, name)[blocks, THREADS](*args)


def plane_grid(plan: GridPlan, prep: Tiled, vals, j: int, grid) -> None:
    """Add the visibilities ``vals`` (complex64, prep order) of plane ``j`` to ``grid`` (g, g) complex64."""
    _launch("grid_plane", plan, prep, grid, vals, j)


def plane_degrid(plan: GridPlan, prep: Tiled, grid, j: int, out) -> None:
    """``out`` (complex64, prep order) += plane ``j``'s share of ``grid`` at each visibility."""
    _launch("degrid_plane", plan, prep, grid, out, j)

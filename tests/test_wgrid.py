"""contimg's w-stacking gridder (the algorithm of the CUDA kernels) against a direct DFT and
ducc0, the adjoint identity, the kernels' tile bookkeeping, NVRTC compilation of every kernel,
and — where a device is present — the CUDA kernels against their numba twins."""

import numba
import numpy as np
import pytest

import ducc0.wgridder.experimental as ducc

from contimg.device.backend import gpu_available
from contimg.config import ImageConfig
from contimg.sky.geometry import C_M_S
from contimg.imaging import clean, wgrid
from contimg.imaging.imager import clean_image
from contimg.imaging.wgrid_gpu import TILE, arrange

gpu = pytest.mark.gpu
needs_device = pytest.mark.skipif(not gpu_available(), reason="no CUDA device (cupy)")


def _array(nrow, rng, *, ew_m=1200.0, ns_m=1200.0, w_m=400.0):
    return np.stack([rng.normal(0, ew_m, nrow), rng.normal(0, ns_m, nrow), rng.normal(0, w_m, nrow)], axis=1)


@pytest.fixture(scope="module")
def wide():
    """A wide field (1.4 deg, npix 256 x 20") with |w| up to ~10^4 wavelengths: many w planes."""
    rng = np.random.default_rng(5)
    nrow, freq = 500, np.array([1.31e9, 1.40e9, 1.49e9])
    uvw = _array(nrow, rng, ew_m=200, ns_m=200, w_m=1500)
    vis = rng.normal(size=(nrow, 3)) + 1j * rng.normal(size=(nrow, 3))
    wgt = rng.uniform(0.5, 1.5, (nrow, 3))
    wgt[rng.random((nrow, 3)) < 0.1] = 0
    return dict(uvw=uvw, freq=freq, vis=vis, wgt=wgt, npix=256, cell=np.radians(20 / 3600))


def _lmn(npix, cell, ys, xs):
    l, m = -(xs - npix / 2) * cell, (ys - npix / 2) * cell
    return l, m, np.sqrt(1 - l * l - m * m) - 1


def _dft_dirty(o, ys, xs):
    l, m, nm1 = _lmn(o["npix"], o["cell"], ys, xs)
    out = np.zeros(ys.size)
    for c, f in enumerate(o["freq"]):
        k = f / C_M_S
        ph = -2j * np.pi * k * (np.multiply.outer(l, o["uvw"][:, 0]) + np.multiply.outer(m, o["uvw"][:, 1])
                                + np.multiply.outer(nm1, o["uvw"][:, 2]))
        out += np.real(np.exp(ph) @ (o["wgt"][:, c] * o["vis"][:, c]))
    return out


def _dft_vis(o, image):
    ys, xs = np.nonzero(image)
    l, m, nm1 = _lmn(o["npix"], o["cell"], ys, xs)
    k = o["freq"] / C_M_S
    ph = 2j * np.pi * (np.multiply.outer(o["uvw"][:, 0], l) + np.multiply.outer(o["uvw"][:, 1], m)
                       + np.multiply.outer(o["uvw"][:, 2], nm1))
    return np.stack([np.exp(ph * kk) @ image[ys, xs] for kk in k], axis=1)


@pytest.mark.parametrize("epsilon", [1e-2, 1e-3, 1e-4, 1e-5])
def test_dirty_image_against_direct_dft_and_ducc0(wide, epsilon):
    o = wide
    lo, hi = wgrid.w_range(uvw_m=o["uvw"], freq_hz=o["freq"])
    plan = wgrid.plan_grid(npix=o["npix"], cell_rad=o["cell"], epsilon=epsilon, w_min=lo, w_max=hi)
    assert plan.nplanes > plan.support + 4, "the field should need w stacking"
    # kernel positions prepared in blocks of 97 visibilities (the default block is 16 M)
    prep = wgrid.prepare_visibilities(plan=plan, uvw_m=o["uvw"], freq_hz=o["freq"], select=o["wgt"] > 0, block=97)
    img = wgrid.vis2dirty(uvw_m=o["uvw"], freq_hz=o["freq"], vis=o["vis"], wgt=o["wgt"], npix=o["npix"],
                          cell_rad=o["cell"], epsilon=epsilon, plan=plan, prep=prep)
    ref_ducc = ducc.vis2dirty(uvw=o["uvw"], freq=o["freq"], vis=o["vis"], wgt=o["wgt"], npix_x=o["npix"],
                              npix_y=o["npix"], pixsize_x=o["cell"], pixsize_y=o["cell"], epsilon=epsilon,
                              do_wgridding=True, divide_by_n=False, flip_v=True).T
    rng = np.random.default_rng(1)
    ys, xs = rng.integers(0, o["npix"], 400), rng.integers(0, o["npix"], 400)
    exact = _dft_dirty(o, ys, xs)
    assert np.linalg.norm(img[ys, xs] - exact) / np.linalg.norm(exact) < epsilon
    assert np.linalg.norm(img - ref_ducc) / np.linalg.norm(ref_ducc) < 2 * epsilon


@pytest.mark.parametrize("epsilon", [1e-3, 1e-5])
def test_predicted_visibilities_against_direct_dft_and_ducc0(wide, epsilon):
    o = wide
    rng = np.random.default_rng(2)
    image = np.zeros((o["npix"], o["npix"]))
    ys, xs = rng.integers(0, o["npix"], 300), rng.integers(0, o["npix"], 300)
    image[ys, xs] = rng.normal(size=300)
    vis = wgrid.dirty2vis(uvw_m=o["uvw"], freq_hz=o["freq"], image=image, cell_rad=o["cell"], epsilon=epsilon)
    exact = _dft_vis(o, image)
    ref_ducc = ducc.dirty2vis(uvw=o["uvw"], freq=o["freq"], dirty=image.T.copy(), pixsize_x=o["cell"],
                              pixsize_y=o["cell"], epsilon=epsilon, do_wgridding=True, divide_by_n=False, flip_v=True)
    assert np.linalg.norm(vis - exact) / np.linalg.norm(exact) < epsilon
    assert np.linalg.norm(vis - ref_ducc) / np.linalg.norm(ref_ducc) < 2 * epsilon


def test_grid_and_degrid_are_adjoint(wide):
    """<A x, y> = <x, A^H y> for an image x and visibilities y (A = dirty2vis, A^H = vis2dirty)."""
    o = wide
    rng = np.random.default_rng(3)
    x = rng.normal(size=(o["npix"], o["npix"]))
    y = rng.normal(size=o["vis"].shape) + 1j * rng.normal(size=o["vis"].shape)
    kw = dict(uvw_m=o["uvw"], freq_hz=o["freq"], cell_rad=o["cell"], epsilon=1e-4)
    ax = wgrid.dirty2vis(image=x, **kw)
    ahy = wgrid.vis2dirty(vis=y, wgt=np.ones(y.shape), npix=o["npix"], **kw)
    lhs, rhs = np.real(np.vdot(ax, y)), float(np.sum(x * ahy))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_baselines_beyond_the_pixel_nyquist_wrap_like_ducc0(wide):
    """|u| cell up to ~2: the grid wraps; still the DFT at the pixels, as ducc0's."""
    o = dict(wide, uvw=wide["uvw"] * 4)
    img = wgrid.vis2dirty(uvw_m=o["uvw"], freq_hz=o["freq"], vis=o["vis"], wgt=o["wgt"], npix=o["npix"],
                          cell_rad=o["cell"], epsilon=1e-4)
    ys, xs = np.arange(0, 256, 7), np.arange(0, 256, 7)[::-1]
    exact = _dft_dirty(o, ys, xs)
    assert np.linalg.norm(img[ys, xs] - exact) / np.linalg.norm(exact) < 1e-4
    with pytest.raises(ValueError, match="epsilon"):
        wgrid.kernel_support(1e-8)


@numba.njit(cache=True)
def _emulate_grid_plane(grid, iu, fu, iv, fv, fw, vals, chunk_tile, chunk_start, chunk_end, chunk_jstart,
                        first_chunk, nchunks, side, plane, support, beta, tile):
    """kernels/wgrid.cu grid_plane's index arithmetic, block by block, on the host (one thread)."""
    g = grid.shape[0]
    kwt = np.empty(support)
    ku = np.empty(support)
    kv = np.empty(support)
    for blk in range(nchunks):
        c = first_chunk + blk
        t = chunk_tile[c]
        dj = plane - chunk_jstart[c]
        if dj < 0 or dj >= support:
            raise ValueError("chunk launched for a plane its support does not cover")
        u0, v0 = (t % side) * tile, (t // side) * tile
        s = tile + support - 1
        acc = np.zeros((s, s), np.complex128)
        for n in range(chunk_start[c], chunk_end[c]):
            wgrid._vis_weights(n, fu, fv, fw, support, beta, ku, kv, kwt)
            du, dv = iu[n] % g - u0, iv[n] % g - v0
            if du < 0 or du >= tile or dv < 0 or dv >= tile:
                raise ValueError("visibility outside its tile")
            for a in range(support):
                for b in range(support):
                    acc[dv + a, du + b] += vals[n] * kwt[dj] * kv[a] * ku[b]
        for a in range(s):
            for b in range(s):
                grid[(v0 + a) % g, (u0 + b) % g] += acc[a, b]


@numba.njit(cache=True)
def _emulate_degrid_plane(grid, iu, fu, iv, fv, fw, out, chunk_tile, chunk_start, chunk_end, chunk_jstart,
                          first_chunk, nchunks, side, plane, support, beta, tile):
    """kernels/wgrid.cu degrid_plane's index arithmetic (the region load, then each visibility)."""
    g = grid.shape[0]
    kwt = np.empty(support)
    ku = np.empty(support)
    kv = np.empty(support)
    for blk in range(nchunks):
        c = first_chunk + blk
        t = chunk_tile[c]
        dj = plane - chunk_jstart[c]
        u0, v0 = (t % side) * tile, (t // side) * tile
        s = tile + support - 1
        region = np.empty((s, s), np.complex128)
        for k in range(s * s):
            region[k // s, k % s] = grid[(v0 + k // s) % g, (u0 + k % s) % g]
        for n in range(chunk_start[c], chunk_end[c]):
            wgrid._vis_weights(n, fu, fv, fw, support, beta, ku, kv, kwt)
            du, dv = iu[n] % g - u0, iv[n] % g - v0
            acc = 0j
            for a in range(support):
                r = 0j
                for b in range(support):
                    r += region[dv + a, du + b] * ku[b]
                acc += r * kv[a]
            out[n] += acc * kwt[dj]


def test_tile_bookkeeping_of_the_kernels_equals_the_twin(wide, monkeypatch):
    """`arrange` (sort, chunks) plus the kernels' block/tile index arithmetic (emulated on the
    host, with the launches' chunk windows) grid every plane exactly as the numba twin does;
    chunks are small here so that buckets are cut into several."""
    from contimg.imaging import wgrid_gpu

    monkeypatch.setattr(wgrid_gpu, "CHUNK", 7)
    o = wide
    lo, hi = wgrid.w_range(uvw_m=o["uvw"], freq_hz=o["freq"])
    plan = wgrid.plan_grid(npix=o["npix"], cell_rad=o["cell"], epsilon=1e-4, w_min=lo, w_max=hi)
    prep = wgrid.prepare_visibilities(plan=plan, uvw_m=o["uvw"], freq_hz=o["freq"], select=o["wgt"] > 0)
    tiled = arrange(plan, prep)
    assert sorted(tiled.index.tolist()) == sorted(prep.index.tolist())
    sizes = tiled.chunk_end - tiled.chunk_start
    assert sizes.min() >= 1 and sizes.max() <= 7 and sizes.sum() == prep.index.size
    assert np.any(np.diff(tiled.chunk_tile)[np.diff(tiled.chunk_jstart) == 0] == 0), "no bucket was cut"
    vals = (o["vis"] * o["wgt"]).ravel()
    for j in range(plan.nplanes):
        twin = np.zeros((plan.ngrid, plan.ngrid), np.complex128)
        wgrid._grid_plane(twin, prep.iu, prep.fu, prep.iv, prep.fv, prep.iw, prep.fw, vals[prep.index], j,
                          plan.support, plan.beta)
        first, count = tiled.chunk_window(j, plan.support)
        emu = np.zeros_like(twin)
        _emulate_grid_plane(emu, tiled.iu, tiled.fu, tiled.iv, tiled.fv, tiled.fw, vals[tiled.index],
                            tiled.chunk_tile, tiled.chunk_start, tiled.chunk_end, tiled.chunk_jstart, first, count,
                            tiled.ntile_side, j, plan.support, plan.beta, TILE)
        assert np.allclose(emu, twin, rtol=0, atol=1e-12 * np.abs(twin).max())
        # degridding this plane's grid back: the same per visibility, in the sorted order
        out_twin = np.zeros(prep.index.size, np.complex128)
        wgrid._degrid_plane(twin, prep.iu, prep.fu, prep.iv, prep.fv, prep.iw, prep.fw, out_twin, j, plan.support,
                            plan.beta)
        out_emu = np.zeros(tiled.index.size, np.complex128)
        _emulate_degrid_plane(twin, tiled.iu, tiled.fu, tiled.iv, tiled.fv, tiled.fw, out_emu, tiled.chunk_tile,
                              tiled.chunk_start, tiled.chunk_end, tiled.chunk_jstart, first, count, tiled.ntile_side,
                              j, plan.support, plan.beta, TILE)
        by_index = dict(zip(prep.index.tolist(), out_twin))
        expect = np.array([by_index[i] for i in tiled.index.tolist()])
        assert np.allclose(out_emu, expect, rtol=0, atol=1e-12 * max(np.abs(expect).max(), 1e-300))


def test_every_kernel_compiles_with_nvrtc():
    """Each kernels/*.cu compiles for the H100 (sm_90) and an A100 (sm_80) with NVRTC (no device
    needed) and exports the functions the drivers launch."""
    from contimg.device.nvrtc import NvrtcUnavailable, kernel_names, nvrtc_compile

    entries = {"wgrid.cu": {"grid_plane", "degrid_plane"}, "hogbom.cu": {"hogbom"}}
    assert set(kernel_names()) == set(entries)
    for name, want in entries.items():
        for arch in ("compute_90", "compute_80"):
            try:
                ptx = nvrtc_compile(name, arch=arch)
            except NvrtcUnavailable as exc:
                pytest.fail(f"{exc} (the test extra installs it)")
            found = {line.split("(")[0].split()[-1] for line in ptx.splitlines() if ".entry" in line}
            assert want <= found, (name, arch, found)


def test_a_kernel_that_does_not_compile_names_the_file_and_the_error(monkeypatch):
    """NVRTC's log comes back in the error (cuda-python's bindings, not a hand-written ctypes one)."""
    from contimg.device import nvrtc

    source = nvrtc.kernel_source
    monkeypatch.setattr(nvrtc, "kernel_source", lambda name: source(name) + "\n__global__ void broken() { int x = ; }\n")
    with pytest.raises(nvrtc.NvrtcError, match=r"(?s)kernels/hogbom.cu does not compile for compute_90.*expected an "
                                               r"expression"):
        nvrtc.nvrtc_compile("hogbom.cu")


@pytest.fixture(scope="module")
def small_sky():
    """Point sources seen by a compact random array, with noise; the truth to clean against."""
    rng = np.random.default_rng(9)
    nrow, freq = 1500, np.linspace(1.31e9, 1.49e9, 4)
    uvw = _array(nrow, rng, ew_m=250, ns_m=250, w_m=60)
    npix, cell = 128, np.radians(30 / 3600)
    srcs = [(10, -7, 1.0), (-25, 30, 0.5), (40, 12, 0.25)]
    image = np.zeros((npix, npix))
    for dx, dy, s in srcs:
        image[npix // 2 + dy, npix // 2 + dx] = s
    o = dict(uvw=uvw, freq=freq, npix=npix, cell=cell)
    vis = _dft_vis(o, image) + 0.05 * (rng.normal(size=(nrow, 4)) + 1j * rng.normal(size=(nrow, 4)))
    return dict(uvw=uvw, freq=freq, vis=vis.astype(np.complex64), wgt=np.ones((nrow, 4), np.float32), npix=npix,
                cell=cell, srcs=srcs)


def test_clean_with_the_device_algorithm_on_the_host_equals_the_ducc0_clean(small_sky):
    """clean_image through contimg's gridder (backend "twin": the device path's arithmetic on
    numpy) against the ducc0 path: the same components, the same restored image to 1e-3 of
    the peak, every source's flux within 1 %."""
    o = small_sky
    cfg = ImageConfig(npix=o["npix"], cell_arcsec=30.0, weighting="natural", niter=300, threshold_sigma=3.0)
    kw = dict(uvw_m=o["uvw"], freq_hz=o["freq"], vis=o["vis"], wgt=o["wgt"], npix=o["npix"], cell_rad=o["cell"],
              cfg=cfg)
    ref = clean_image(backend="cpu", **kw)
    twin = clean_image(backend="twin", **kw)
    assert abs(twin.iterations - ref.iterations) <= 0.02 * ref.iterations + 2
    peak = float(ref.restored.max())
    assert np.max(np.abs(twin.restored - ref.restored)) < 1e-3 * peak
    n = o["npix"]
    for dx, dy, s in o["srcs"]:
        assert twin.model[n // 2 + dy - 1:n // 2 + dy + 2, n // 2 + dx - 1:n // 2 + dx + 2].sum() == \
            pytest.approx(s, rel=0.02)


# ---- on a device: the CUDA kernels against their twins ---------------------------------------

@gpu
@needs_device
@pytest.mark.parametrize("epsilon", [1e-2, 1e-4, 1e-5])
def test_cuda_gridder_equals_the_twin_and_ducc0(wide, epsilon):
    import cupy

    o = wide
    kw = dict(uvw_m=o["uvw"], freq_hz=o["freq"], cell_rad=o["cell"], epsilon=epsilon)
    dev = cupy.asnumpy(wgrid.vis2dirty(vis=cupy.asarray(o["vis"]), wgt=cupy.asarray(o["wgt"]), npix=o["npix"],
                                       xp=cupy, **kw))
    twin = wgrid.vis2dirty(vis=o["vis"], wgt=o["wgt"], npix=o["npix"], **kw)
    assert np.linalg.norm(dev - twin) / np.linalg.norm(twin) < max(epsilon, 1e-5)
    image = np.random.default_rng(4).normal(size=(o["npix"], o["npix"]))
    dev_v = cupy.asnumpy(wgrid.dirty2vis(image=cupy.asarray(image), xp=cupy, **kw))
    twin_v = wgrid.dirty2vis(image=image, **kw)
    assert np.linalg.norm(dev_v - twin_v) / np.linalg.norm(twin_v) < max(epsilon, 1e-5)
    # adjoint on the device (float32 accumulation: 1e-5)
    y = o["vis"]
    ahy = cupy.asnumpy(wgrid.vis2dirty(vis=cupy.asarray(y), wgt=cupy.ones(y.shape), npix=o["npix"], xp=cupy, **kw))
    assert np.real(np.vdot(dev_v, y)) == pytest.approx(float(np.sum(image * ahy)), rel=1e-5)


@gpu
@needs_device
def test_hogbom_kernel_equals_the_twin():
    import cupy

    rng = np.random.default_rng(6)
    res = rng.normal(size=(256, 256))
    yy, xx = np.mgrid[-256:256, -256:256]
    psf = np.exp(-(xx**2 + yy**2) / 18.0) + 0.05 * np.cos(xx / 7.0) * np.exp(-(xx**2 + yy**2) / 2e4)
    out = []
    for xp in (np, cupy):
        model = xp.zeros((256, 256))
        n = clean.minor_cycle(residual=xp.asarray(res), psf=xp.asarray(psf), model=model, gain=0.1, stop_jy=2.0,
                              niter=2000, xp=xp)
        out.append((n, cupy.asnumpy(model) if xp is cupy else model))
    assert out[0][0] == out[1][0]
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-9, atol=1e-12)


@gpu
@needs_device
def test_device_clean_equals_the_cpu_clean(small_sky):
    from contimg.imaging.selfcheck import device_selfcheck

    assert device_selfcheck() is None
    o = small_sky
    cfg = ImageConfig(npix=o["npix"], cell_arcsec=30.0, weighting="natural", niter=300, threshold_sigma=3.0)
    kw = dict(uvw_m=o["uvw"], freq_hz=o["freq"], vis=o["vis"], wgt=o["wgt"], npix=o["npix"], cell_rad=o["cell"],
              cfg=cfg)
    ref, dev = clean_image(backend="cpu", **kw), clean_image(backend="gpu", **kw)
    assert np.max(np.abs(dev.restored - ref.restored)) < 1e-3 * float(ref.restored.max())


def test_clean_mask_and_absolute_threshold(small_sky, tmp_path):
    """A CLEAN mask around two of the three sources keeps the third out of the model (its flux
    stays in the residual); an absolute threshold above the faintest source's peak stops CLEAN
    before it."""
    from astropy.io import fits

    o = small_sky
    n = o["npix"]
    mask = np.zeros((1, 1, n, n), np.float32)
    for dx, dy, _ in o["srcs"][:2]:
        mask[0, 0, n // 2 + dy - 3:n // 2 + dy + 4, n // 2 + dx - 3:n // 2 + dx + 4] = 1
    path = tmp_path / "mask.fits"
    fits.writeto(path, mask)
    kw = dict(uvw_m=o["uvw"], freq_hz=o["freq"], vis=o["vis"], wgt=o["wgt"], npix=n, cell_rad=o["cell"],
              backend="cpu")
    base = dict(npix=n, cell_arcsec=30.0, weighting="natural", niter=300, threshold_sigma=3.0)
    masked = clean_image(cfg=ImageConfig(**base, clean_mask=str(path)), **kw)
    inside = mask[0, 0] != 0
    assert masked.model[~inside].sum() == 0 and masked.model[inside].sum() == pytest.approx(1.5, rel=0.03)
    dx, dy, s3 = o["srcs"][2]
    assert masked.residual[n // 2 + dy, n // 2 + dx] == pytest.approx(s3, rel=0.1)
    # stopped at 0.4 Jy/beam: the 1 and 0.5 Jy sources cleaned down to about that, the 0.25 Jy one untouched
    stopped = clean_image(cfg=ImageConfig(**base, threshold_jy=0.4), **kw)
    assert stopped.threshold_jy == 0.4
    assert stopped.model.sum() == pytest.approx((1.0 - 0.4) + (0.5 - 0.4), abs=0.1)
    assert stopped.model[n // 2 + dy - 2:n // 2 + dy + 3, n // 2 + dx - 2:n // 2 + dx + 3].sum() == 0
    # a bad mask is refused when the configuration is read, naming the file and the problem
    with pytest.raises(ValueError, match="missing/mask.fits: cannot read it"):
        ImageConfig(**base, clean_mask=str(tmp_path / "missing" / "mask.fits"))
    fits.writeto(tmp_path / "small.fits", np.ones((8, 8), np.float32))
    with pytest.raises(ValueError, match=r"small.fits: shape \(8, 8\)"):
        ImageConfig(**base, clean_mask=str(tmp_path / "small.fits"))


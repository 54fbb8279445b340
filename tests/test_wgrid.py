"""contimg's w-stacking gridder (the algorithm of the device kernels, here its numba twin)
against a direct DFT and ducc0, the adjoint identity, CLEAN through it, and — where a device is
present — the device clean against the CPU clean. The kernels themselves (`contimg.kernels`)
run in tests/test_kernels.py: under numba-cuda's CUDA simulator in CI, on a device where one is."""

import numpy as np
import pytest

import ducc0.wgridder.experimental as ducc

from contimg.device.backend import gpu_available
from contimg.config import ImageConfig
from contimg.sky.geometry import C_M_S
from contimg.imaging import wgrid
from contimg.imaging.imager import clean_image

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


def test_a_psf_without_the_w_term_is_the_2d_dft_on_both_gridders(wide):
    """``psf_w_term`` False (the default): ducc0's PSF and the device algorithm's (w-stacking
    with w taken as 0) are the direct 2D DFT of the weights, sum wgt cos 2 pi (u l + v m) / sum wgt,
    to epsilon; they peak at 1 as the w-term PSF does, and at 1.4 deg with |w| ~ 10^4 wavelengths
    they differ from it further out (the option changes what it says)."""
    from contimg.imaging.grid import Ducc0Gridder

    o = wide
    eps = 1e-4
    wgt = o["wgt"].astype(np.float32)
    kw = dict(uvw_m=o["uvw"], freq_hz=o["freq"], vis=o["vis"].astype(np.complex64), wgt=wgt, npix=o["npix"],
              cell_rad=o["cell"], epsilon=eps)
    cpu_2d = Ducc0Gridder(**kw, psf_w_term=False).psf_image()
    cpu_w = Ducc0Gridder(**kw, psf_w_term=True).psf_image()
    twin_2d = wgrid.WGridder(**kw, psf_w_term=False).psf_image()
    rng = np.random.default_rng(11)
    ys, xs = rng.integers(0, o["npix"], 400), rng.integers(0, o["npix"], 400)
    l, m, _ = _lmn(o["npix"], o["cell"], ys, xs)
    exact = np.zeros(ys.size)
    for c, f in enumerate(o["freq"]):
        k = f / C_M_S
        exact += np.cos(2 * np.pi * k * (np.multiply.outer(l, o["uvw"][:, 0]) + np.multiply.outer(m, o["uvw"][:, 1]))) @ wgt[:, c]
    exact /= wgt.sum(dtype=np.float64)
    for psf in (cpu_2d, twin_2d):
        assert np.max(np.abs(psf[ys, xs] - exact)) < 3 * eps
        assert psf[o["npix"] // 2, o["npix"] // 2] == pytest.approx(1.0, abs=3 * eps)
    assert cpu_w[o["npix"] // 2, o["npix"] // 2] == pytest.approx(1.0, abs=3 * eps)
    assert np.max(np.abs(cpu_w - cpu_2d)) > 100 * eps


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


def test_a_device_clean_brings_back_only_the_images_asked_for(small_sky):
    """From a device (the twin) come back residual, restored and the asked-for images: with
    ``images=("dirty",)`` three planes cross (the host→device counter's "images"), psf and
    model are None, and what came back equals the clean that returned all five."""
    from contimg.device.transfer import TransferCounter

    o = small_sky
    cfg = ImageConfig(npix=o["npix"], cell_arcsec=30.0, weighting="natural", niter=100, threshold_sigma=3.0)
    kw = dict(uvw_m=o["uvw"], freq_hz=o["freq"], wgt=o["wgt"], npix=o["npix"], cell_rad=o["cell"], cfg=cfg,
              backend="twin")
    every, some = TransferCounter(), TransferCounter()
    full = clean_image(vis=o["vis"].copy(), transfers=every, **kw)
    part = clean_image(vis=o["vis"].copy(), transfers=some, images=("dirty",), **kw)
    plane = o["npix"] ** 2 * 4
    assert every.by_label["d2h:images"] == 5 * plane and some.by_label["d2h:images"] == 3 * plane
    assert part.psf is None and part.model is None
    for name in ("dirty", "residual", "restored"):
        np.testing.assert_array_equal(getattr(part, name), getattr(full, name))


# ---- the whole device clean against the CPU clean: in CI the device path's own code on numpy
# with the numba twins of the kernels ("twin"), on a device the same body with the kernels (the
# kernels themselves are held to their twins in tests/test_kernels.py, under the CUDA simulator)

@pytest.mark.parametrize("backend", ["twin", pytest.param("gpu", marks=[gpu, needs_device])])
def test_device_clean_equals_the_cpu_clean(small_sky, backend):
    if backend == "gpu":
        from contimg.imaging.selfcheck import device_selfcheck

        assert device_selfcheck() is None
    o = small_sky
    cfg = ImageConfig(npix=o["npix"], cell_arcsec=30.0, weighting="natural", niter=300, threshold_sigma=3.0)
    kw = dict(uvw_m=o["uvw"], freq_hz=o["freq"], wgt=o["wgt"], npix=o["npix"], cell_rad=o["cell"], cfg=cfg)
    ref, dev = clean_image(backend="cpu", vis=o["vis"].copy(), **kw), clean_image(backend=backend, vis=o["vis"].copy(), **kw)
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


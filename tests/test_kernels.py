"""Every device kernel (`contimg.kernels`, numba-cuda) executed and held to its CPU twin.

Each test body is a ``_case_*(xp)`` function run on two targets:

- ``sim``: numba-cuda's CUDA simulator on the CPU (numpy arrays), in CI. The simulator is chosen
  when numba is imported (``NUMBA_ENABLE_CUDASIM=1``), and the rest of the suite imports numba
  for the twins, so the ``sim`` tests run in one child pytest of this module with that variable
  set (`simulated`); each parent test reports its own child's outcome (failure text included).
- ``device``: the same body with CuPy arrays on a CUDA device (``gpu`` marker; skipped without one).

Sizes are small (the simulator runs every thread as a Python thread) and the gridder's chunks are
a few visibilities, so that buckets are cut into several chunks and tiles have neighbours.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import ducc0.wgridder.experimental as ducc

from contimg.device.backend import gpu_available
from contimg.imaging import clean, wgrid, wgrid_gpu
from contimg.sky.geometry import C_M_S

IN_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
ROOT = Path(__file__).resolve().parents[1]

# The twins and the kernels at float32 (device) or float64 (the simulator's Python arithmetic on
# float32 inputs): per plane, the kernel's grid against the numba twin's, relative to its peak.
PLANE_RTOL = 2e-5


# ---- the harness: one child pytest under the simulator, one outcome per test ----------------

@pytest.fixture(scope="session")
def simulated(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Outcome of each ``[sim]`` test of this module run in a child pytest with
    ``NUMBA_ENABLE_CUDASIM=1``: {test name: (outcome, message)}, outcome "passed", "failed" or
    "skipped"."""
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install -e '.[test]')")
    report = tmp_path_factory.mktemp("cudasim") / "junit.xml"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(Path(__file__)), "-k", "sim", "-q", "-p",
                           "no:cacheprovider", f"--junitxml={report}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    if not report.exists():
        pytest.fail(f"the simulator's child pytest wrote no report (exit {proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    out = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = f"{node.get('message', '')}\n{node.text or ''}"
                break
        out[case.get("name")] = (outcome, message)
    return out


@pytest.fixture(params=["sim", pytest.param("device", marks=pytest.mark.gpu)])
def on(request):
    """Run a ``_case_*(xp)`` body on this test's target."""
    if request.param == "device":
        if not gpu_available():
            pytest.skip("no CUDA device (cupy)")
        import cupy

        return lambda case: case(cupy)
    if IN_SIMULATOR:
        return lambda case: case(np)
    results = request.getfixturevalue("simulated")

    def report(case):
        outcome, message = results.get(request.node.name, ("missing", "the child pytest did not run it"))
        if outcome == "skipped":
            pytest.skip(f"under the CUDA simulator: {message.strip()}")
        if outcome != "passed":
            pytest.fail(f"{request.node.name} under the CUDA simulator (child pytest, NUMBA_ENABLE_CUDASIM=1) "
                        f"{outcome}:\n{message}", pytrace=False)

    return report


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


# ---- the gridder ---------------------------------------------------------------------------------

def _problem(nrow: int = 40, seed: int = 7) -> dict:
    """A wide field (64 px of 120", 2.1 deg) with |w| to ~1500 wavelengths: several w planes."""
    rng = np.random.default_rng(seed)
    freq = np.array([1.35e9, 1.45e9])
    uvw = np.stack([rng.normal(0, 300, nrow), rng.normal(0, 300, nrow), rng.normal(0, 300, nrow)], axis=1)
    vis = rng.normal(size=(nrow, 2)) + 1j * rng.normal(size=(nrow, 2))
    wgt = rng.uniform(0.5, 1.5, (nrow, 2))
    wgt[rng.random((nrow, 2)) < 0.1] = 0
    return dict(uvw=uvw, freq=freq, vis=vis, wgt=wgt, npix=64, cell=np.radians(120 / 3600))


def _small_blocks(monkeypatch, *, chunk: int) -> None:
    monkeypatch.setattr(wgrid_gpu, "CHUNK", chunk)
    if IN_SIMULATOR:  # a Python thread per simulated thread: few of them
        monkeypatch.setattr(wgrid_gpu, "THREADS", 4)


def _case_grid_and_degrid_planes(xp, monkeypatch):
    """Every w plane: the ``grid_plane`` kernel's grid equals the numba twin `_grid_plane`'s and
    ``degrid_plane``'s visibilities equal `_degrid_plane`'s (sorted order), to PLANE_RTOL of the
    peak; chunks of at most 3 visibilities, so buckets are cut and many chunks share a tile."""
    from contimg.kernels import wgrid as kernels

    assert wgrid_gpu.TILE == kernels.TILE
    _small_blocks(monkeypatch, chunk=3)
    o = _problem()
    lo, hi = wgrid.w_range(uvw_m=o["uvw"], freq_hz=o["freq"])
    plan = wgrid.plan_grid(npix=o["npix"], cell_rad=o["cell"], epsilon=1e-2, w_min=lo, w_max=hi)
    assert plan.ngrid // wgrid_gpu.TILE >= 4 and plan.nplanes > plan.support
    prep = wgrid.prepare_visibilities(plan=plan, uvw_m=o["uvw"], freq_hz=o["freq"], select=o["wgt"] > 0)
    dev = wgrid_gpu.arrange(plan, wgrid.prepare_visibilities(plan=plan, uvw_m=o["uvw"], freq_hz=o["freq"],
                                                             select=xp.asarray(o["wgt"] > 0), xp=xp), xp=xp)
    order = _host(dev.index)  # the kernels' (sorted) order of the visibilities
    sizes = _host(dev.chunk_end) - _host(dev.chunk_start)
    tiles, jstart = _host(dev.chunk_tile), _host(dev.chunk_jstart)
    assert sizes.max() == 3 and sizes.sum() == prep.index.size
    assert np.any(np.diff(tiles)[np.diff(jstart) == 0] == 0), "no bucket was cut"
    vals = (o["vis"] * o["wgt"]).ravel()
    vals_sorted = xp.asarray(vals[order].astype(np.complex64))
    where = np.searchsorted(prep.index, order)  # each sorted visibility's place in prep's order
    assert np.array_equal(prep.index[where], order)
    for j in range(plan.nplanes):
        twin = np.zeros((plan.ngrid, plan.ngrid), np.complex128)
        wgrid._grid_plane(twin, prep.iu, prep.fu, prep.iv, prep.fv, prep.iw, prep.fw, vals[prep.index], j,
                          plan.support, plan.beta)
        grid = xp.zeros((plan.ngrid, plan.ngrid), np.complex64)
        wgrid_gpu.plane_grid(plan, dev, vals_sorted, j, grid)
        peak = np.abs(twin).max()
        assert peak > 0
        err = np.abs(_host(grid) - twin).max()
        assert err <= PLANE_RTOL * peak, f"plane {j}: grid differs from the twin by {err / peak:.2e} of its peak"
        out_twin = np.zeros(prep.index.size, np.complex128)
        wgrid._degrid_plane(twin, prep.iu, prep.fu, prep.iv, prep.fv, prep.iw, prep.fw, out_twin, j, plan.support,
                            plan.beta)
        out = xp.zeros(prep.index.size, np.complex64)
        wgrid_gpu.plane_degrid(plan, dev, xp.asarray(twin.astype(np.complex64)), j, out)
        expect = out_twin[where]
        err = np.abs(_host(out) - expect).max()
        scale = np.abs(expect).max()
        assert err <= PLANE_RTOL * scale, f"plane {j}: degridded visibilities differ by {err / scale:.2e}"


def test_grid_and_degrid_kernels_equal_the_twins_plane_by_plane(on, monkeypatch):
    on(lambda xp: _case_grid_and_degrid_planes(xp, monkeypatch))


def _kernel_ops(monkeypatch, xp):
    """`wgrid`'s operators through the kernels also for numpy arrays (the simulator): what the
    device path runs, with the array module of the target."""
    if xp is np:
        def ops(_xp, plan, prep):
            if not isinstance(prep, wgrid_gpu.Tiled):
                prep = wgrid_gpu.arrange(plan, prep, xp=np)
            return prep, wgrid_gpu.plane_grid, wgrid_gpu.plane_degrid, np.complex64

        monkeypatch.setattr(wgrid, "_backend_ops", ops)


def _dft(o, image=None, ys=None, xs=None):
    """Direct DFT: the dirty image at (ys, xs), or the visibilities of ``image``."""
    n, cell = o["npix"], o["cell"]
    if image is not None:
        ys, xs = np.nonzero(image)
    l, m = -(xs - n / 2) * cell, (ys - n / 2) * cell
    nm1 = np.sqrt(1 - l * l - m * m) - 1
    ph = np.multiply.outer(o["uvw"][:, 0], l) + np.multiply.outer(o["uvw"][:, 1], m) + \
        np.multiply.outer(o["uvw"][:, 2], nm1)
    k = o["freq"] / C_M_S
    if image is not None:
        return np.stack([np.exp(2j * np.pi * ph * kk) @ image[ys, xs] for kk in k], axis=1)
    return sum(np.real((o["wgt"][:, c] * o["vis"][:, c]) @ np.exp(-2j * np.pi * ph * kk)) for c, kk in enumerate(k))


def _case_gridder_against_dft_and_ducc0(xp, monkeypatch, epsilon=1e-3):
    """vis2dirty and dirty2vis with the kernels: the direct DFT to epsilon, ducc0 to 2 epsilon,
    the numba twin's results to 1e-5 (float32 grids), and adjoint to each other to 1e-5."""
    _small_blocks(monkeypatch, chunk=16)
    _kernel_ops(monkeypatch, xp)
    o = _problem(seed=8)
    kw = dict(uvw_m=o["uvw"], freq_hz=o["freq"], cell_rad=o["cell"], epsilon=epsilon)
    img = _host(wgrid.vis2dirty(vis=xp.asarray(o["vis"]), wgt=xp.asarray(o["wgt"]), npix=o["npix"], xp=xp, **kw))
    ys, xs = np.divmod(np.arange(0, o["npix"] ** 2, 37), o["npix"])
    exact = _dft(o, ys=ys, xs=xs)
    assert np.linalg.norm(img[ys, xs] - exact) / np.linalg.norm(exact) < epsilon
    ref = ducc.vis2dirty(uvw=o["uvw"], freq=o["freq"], vis=o["vis"], wgt=o["wgt"], npix_x=o["npix"], npix_y=o["npix"],
                         pixsize_x=o["cell"], pixsize_y=o["cell"], epsilon=epsilon, do_wgridding=True,
                         divide_by_n=False, flip_v=True).T
    assert np.linalg.norm(img - ref) / np.linalg.norm(ref) < 2 * epsilon
    monkeypatch.undo()
    twin = wgrid.vis2dirty(vis=o["vis"], wgt=o["wgt"], npix=o["npix"], **kw)
    assert np.linalg.norm(img - twin) / np.linalg.norm(twin) < 1e-5

    _small_blocks(monkeypatch, chunk=16)
    _kernel_ops(monkeypatch, xp)
    rng = np.random.default_rng(2)
    image = np.zeros((o["npix"], o["npix"]))
    image[rng.integers(0, o["npix"], 40), rng.integers(0, o["npix"], 40)] = rng.normal(size=40)
    vis = _host(wgrid.dirty2vis(image=xp.asarray(image), xp=xp, **kw))
    exact = _dft(o, image=image)
    assert np.linalg.norm(vis - exact) / np.linalg.norm(exact) < epsilon
    ref_v = ducc.dirty2vis(uvw=o["uvw"], freq=o["freq"], dirty=image.T.copy(), pixsize_x=o["cell"], pixsize_y=o["cell"],
                           epsilon=epsilon, do_wgridding=True, divide_by_n=False, flip_v=True)
    assert np.linalg.norm(vis - ref_v) / np.linalg.norm(ref_v) < 2 * epsilon
    monkeypatch.undo()
    twin_v = wgrid.dirty2vis(image=image, **kw)
    assert np.linalg.norm(vis - twin_v) / np.linalg.norm(twin_v) < 1e-5
    # the two kernels are adjoint: <A x, y> = <x, A^H y> with y = wgt V (float32 grids: 1e-5)
    lhs, rhs = np.real(np.vdot(vis, o["wgt"] * o["vis"])), float(np.sum(image * img))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_kernel_gridder_agrees_with_the_direct_dft_ducc0_and_the_twin(on, monkeypatch):
    on(lambda xp: _case_gridder_against_dft_and_ducc0(xp, monkeypatch))


# ---- Högbom ---------------------------------------------------------------------------------------

def _case_hogbom(xp):
    """The ``hogbom`` kernel (one block, shared-memory peak search) against the twin `_minor` on
    the same active set: the same number of components and the same model and residuals (float64:
    1e-12; equal values tie-break to the first index in both). Residuals with exact ties too."""
    rng = np.random.default_rng(6)
    n = 24
    res = rng.normal(size=(n, n))
    res[3, 5] = res[17, 2] = 3.5  # three equal |peaks|
    res[9, 9] = -3.5
    yy, xx = np.mgrid[-n:n, -n:n]
    psf = (np.exp(-(xx**2 + yy**2) / 8.0) + 0.05 * np.cos(xx / 3.0) * np.exp(-(xx**2 + yy**2) / 400.0))
    psf = psf.astype(np.float32)
    ys, xs = np.nonzero(np.abs(res) > 1.2)
    ys, xs = ys.astype(np.int64), xs.astype(np.int64)
    assert ys.size > 40  # more than one value per thread
    threads = 16 if xp is np else clean.HOGBOM_THREADS
    out = []
    for minor in ("twin", "kernel"):
        vals = res[ys, xs].astype(np.float64)
        model = np.zeros((n, n))
        if minor == "twin":
            done = clean._minor(ys, xs, vals, psf, model, 0.1, 1.0, 120)
        else:
            vals, model = xp.asarray(vals), xp.asarray(model)
            done = clean._minor_device(xp.asarray(ys), xp.asarray(xs), vals, xp.asarray(psf), model, 0.1, 1.0, 120,
                                       threads=threads)
        out.append((done, _host(model), _host(vals)))
    (n0, m0, v0), (n1, m1, v1) = out
    assert n0 == n1 and n0 > 20
    np.testing.assert_allclose(m1, m0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v1, v0, rtol=0, atol=1e-12)
    # a stop above every residual: no component, on both
    model = xp.zeros((n, n))
    assert clean._minor_device(xp.asarray(ys), xp.asarray(xs), xp.asarray(res[ys, xs]), xp.asarray(psf), model, 0.1,
                               10.0, 50, threads=threads) == 0
    assert not np.any(_host(model))


def test_hogbom_kernel_equals_the_twin(on):
    on(_case_hogbom)


# ---- every kernel compiles for the device (numba's typing and NVVM, no device needed) ------------

@pytest.mark.skipif(IN_SIMULATOR, reason="the simulator compiles nothing")
@pytest.mark.parametrize("cc", [(9, 0), (8, 0)])
def test_every_kernel_compiles_to_ptx_with_the_drivers_arguments(cc):
    """Each kernel, typed with the very arguments its driver passes (`wgrid_gpu.launch_args`,
    `clean._hogbom_args`; numpy arrays type as CuPy's do), compiles to PTX for the H100 (sm_90)
    and an A100 (sm_80): what the simulator cannot check (numba's typing for the device, shared
    and local arrays, atomics on float32). Needs NVVM (the ``test`` extra's numba-cuda[cu12])."""
    numba = pytest.importorskip("numba")
    cuda = pytest.importorskip("numba.cuda")
    from contimg.kernels import hogbom as hogbom_kernel
    from contimg.kernels import wgrid as wgrid_kernels

    o = _problem()
    lo, hi = wgrid.w_range(uvw_m=o["uvw"], freq_hz=o["freq"])
    plan = wgrid.plan_grid(npix=o["npix"], cell_rad=o["cell"], epsilon=1e-4, w_min=lo, w_max=hi)
    tiled = wgrid_gpu.arrange(plan, wgrid.prepare_visibilities(plan=plan, uvw_m=o["uvw"], freq_hz=o["freq"]))
    grid = np.zeros((plan.ngrid, plan.ngrid), np.complex64)
    vals = np.zeros(tiled.index.size, np.complex64)
    blocks, args = wgrid_gpu.launch_args(plan, tiled, grid, vals, plan.support - 1)
    assert blocks > 0
    sig = tuple(numba.typeof(a) for a in args)
    n = 8
    h_args = clean._hogbom_args(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n), np.zeros((4, 4), np.float32),
                                np.zeros((2, 2)), 0.1, 0.5, 10, np.zeros(1, np.int32))
    for kern, signature in ((wgrid_kernels.grid_plane, sig), (wgrid_kernels.degrid_plane, sig),
                            (hogbom_kernel.hogbom, tuple(numba.typeof(a) for a in h_args))):
        ptx, _ = cuda.compile_ptx(kern.py_func, signature, cc=cc)
        entries = [line for line in ptx.splitlines() if ".entry" in line]
        assert len(entries) == 1 and kern.py_func.__name__ in entries[0]
        assert f".target sm_{cc[0]}{cc[1]}" in ptx
        assert ".shared" in ptx  # the tile accumulator / the reduction arrays

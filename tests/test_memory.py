"""The memory-lean CPU paths (issue 25) against the plain computations they replace."""

import gc
import os
import resource
import sys
import weakref

import numpy as np
import pytest

from contimg.device.memory import POPULATE_MIN_BYTES, empty_resident, mapped_empty, populate_pages, release_pages

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux only")
def test_released_pages_leave_the_resident_set_and_read_as_zero():
    a = np.full((64, 2**20 // 8), 3.0)  # 64 MiB, resident once written
    before = _rss_bytes()
    released = release_pages(a[8:40])
    after = _rss_bytes()
    assert released >= 32 * 2**20 - 2 * PAGE
    assert before - after >= 0.9 * released  # the kernel took them back at once
    assert not a[9:39].any()  # whole pages inside the view: zeros now
    assert (a[:8] == 3.0).all() and (a[40:] == 3.0).all()  # outside it: untouched
    assert release_pages(a[:, ::2]) == 0  # not contiguous: nothing released


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux only")
def test_populated_pages_are_resident_before_they_are_written_and_keep_their_values():
    """populate_pages: one call instead of a page fault per page (the kernel's own count of
    minor faults, while the second half is written) and the values already there unchanged."""
    a = mapped_empty((16, 2**20 // 8), np.float64, populate=False)  # 16 MiB, nothing resident
    assert a.shape == (16, 2**20 // 8) and a.dtype == np.float64 and a.flags.c_contiguous and a.flags.writeable
    a[:8] = 5.0  # faulted in page by page
    if populate_pages(a) == 0:
        pytest.skip("this kernel cannot populate pages (MADV_POPULATE_WRITE: Linux >= 5.14)")
    assert (a[:8] == 5.0).all()
    before = _faults()
    a[8:] = 7.0
    assert _faults() - before < 0.1 * (8 * 2**20 // PAGE)  # written without faulting each page
    assert (a[8:] == 7.0).all() and (a[:8] == 5.0).all()
    assert populate_pages(a[:, ::2]) == 0  # not contiguous: nothing populated


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux only")
def test_a_mapped_array_is_unmapped_with_its_last_view():
    a = mapped_empty((3, PAGE), np.uint8, populate=True)
    mapping = weakref.ref(a.base.base)  # the mmap under frombuffer under reshape
    view = a[1:]
    del a
    gc.collect()
    assert mapping() is not None  # a view still holds it
    del view
    gc.collect()
    assert mapping() is None


def test_a_large_resident_array_is_its_own_mapping_and_a_small_one_plain_numpy():
    small = empty_resident((4, 1000), np.complex64)
    assert small.base is None and small.shape == (4, 1000) and small.dtype == np.complex64
    big = empty_resident((POPULATE_MIN_BYTES // 8,), np.float64)
    assert big.shape == (POPULATE_MIN_BYTES // 8,) and big.flags.writeable
    if sys.platform.startswith("linux"):
        assert big.base is not None  # a mapping of its own


def test_incremental_residual_equals_the_image_of_data_minus_model():
    """Ducc0Gridder keeps residual visibilities and subtracts only each new part of the model, a
    block of rows at a time, overwriting the data (consume=True); the residual image of two
    successive models against ducc0's dirty image of vis - dirty2vis(model) done directly."""
    import ducc0.wgridder.experimental as wg

    from contimg.imaging.grid import Ducc0Gridder, dirty_image

    rng = np.random.default_rng(3)
    nrow, freq = 3000, np.linspace(1.31e9, 1.49e9, 6)
    uvw = np.column_stack([rng.normal(0, 400, nrow), rng.normal(0, 400, nrow), rng.normal(0, 20, nrow)])
    vis = (rng.normal(size=(nrow, 6)) + 1j * rng.normal(size=(nrow, 6))).astype(np.complex64)
    wgt = rng.uniform(0.5, 1.0, (nrow, 6)).astype(np.float32)
    wgt[rng.random((nrow, 6)) < 0.1] = 0
    npix, cell, eps = 128, np.radians(20 / 3600), 1e-5
    m1 = np.zeros((npix, npix), np.float32)
    m1[60, 70], m1[30, 90] = 1.0, 0.4
    m2 = m1.copy()
    m2[60, 70], m2[100, 20] = 1.3, -0.2
    data = vis.copy()
    g = Ducc0Gridder(uvw_m=uvw, freq_hz=freq, vis=vis, wgt=wgt, npix=npix, cell_rad=cell, epsilon=eps, consume=True,
                     predict_block_bytes=700 * 6 * 8)  # five blocks of rows
    dirty = g.dirty_image()
    for model in (m1, m2):
        got = g.residual_image(model)
        pred = wg.dirty2vis(uvw=uvw, freq=freq, dirty=np.ascontiguousarray(model.T), pixsize_x=cell, pixsize_y=cell,
                            epsilon=eps, do_wgridding=True, divide_by_n=False, flip_v=True)
        want = dirty_image(uvw_m=uvw, freq_hz=freq, vis=(data - pred).astype(np.complex64), wgt=wgt, npix=npix,
                           cell_rad=cell, epsilon=eps)
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert not np.array_equal(vis, data)  # consumed: the data became the residual visibilities
    with pytest.raises(RuntimeError, match="residual visibilities"):
        g.dirty_image()
    assert np.abs(dirty).max() > 0


def test_channel_averaging_is_the_weighted_mean_of_each_group():
    """average_channels against a plain loop: sum w V / sum w and sum w per group of channels,
    a fully flagged group 0, the frequencies the groups' means; a factor that does not divide
    the channels is refused."""
    from contimg.imaging.prep import average_channels

    rng = np.random.default_rng(5)
    nrow, nchan, f = 37, 12, 4
    vis = (rng.normal(size=(nrow, nchan)) + 1j * rng.normal(size=(nrow, nchan))).astype(np.complex64)
    wgt = rng.uniform(0.2, 2.0, (nrow, nchan)).astype(np.float32)
    wgt[rng.random((nrow, nchan)) < 0.2] = 0
    wgt[3, 4:8] = 0
    freq = 1.3e9 + 2.4e5 * np.arange(nchan)
    v, w, fr = average_channels(vis=vis, wgt=wgt, freq_hz=freq, factor=f, rows_per_block=5)
    assert v.shape == w.shape == (nrow, nchan // f) and v.dtype == np.complex64 and w.dtype == np.float32
    for r in range(nrow):
        for k in range(nchan // f):
            sl = slice(k * f, (k + 1) * f)
            ws = float(np.sum(wgt[r, sl], dtype=np.float64))
            assert w[r, k] == pytest.approx(ws, rel=1e-6)
            want = np.sum(wgt[r, sl] * vis[r, sl].astype(np.complex128)) / ws if ws > 0 else 0
            assert abs(v[r, k] - want) <= 1e-6 * max(abs(want), 1)
    assert v[3, 1] == 0 and w[3, 1] == 0
    np.testing.assert_allclose(fr, [freq[k * f:(k + 1) * f].mean() for k in range(nchan // f)], rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="does not divide the 12 channels"):
        average_channels(vis=vis, wgt=wgt, freq_hz=freq, factor=5)

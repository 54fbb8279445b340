"""The exact host median (`contimg.imaging.stats`) against numpy's and astropy's."""

import numpy as np
import pytest
from astropy.stats import mad_std

from contimg.imaging import stats


def _image(rng, n, dtype):
    """A residual-like image: Gaussian noise, a few bright sources, a negative bowl."""
    a = rng.standard_normal(n) * 1e-3
    a[rng.integers(0, n, 200)] += 5.0
    a[: n // 50] -= 2e-3
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [(1 << 17) + 2, (1 << 17) + 1, 1000])
def test_the_median_and_mad_are_numpys_exactly(n, dtype, monkeypatch):
    calls = []
    gather = stats._gather
    monkeypatch.setattr(stats, "_gather", lambda *a: (calls.append(1), gather(*a))[1])
    a = _image(np.random.default_rng(n), n, dtype)
    m = stats.median(a)
    assert m == np.median(a) and m.dtype == np.median(a).dtype
    mad = stats.median_abs_deviation(a.reshape(2, -1) if n % 2 == 0 else a)
    assert mad == np.median(np.abs(a - np.median(a)))
    assert stats.MAD_STD_FACTOR * mad == mad_std(a)
    assert len(calls) == (3 if n > stats._MIN_SIZE else 0)  # the bracketed path ran (median, MAD's two)


def test_a_sample_that_misses_the_middle_falls_back_to_numpy_and_nan_gives_nan(monkeypatch):
    rng = np.random.default_rng(3)
    n = 1 << 18
    a = rng.standard_normal(n).astype(np.float32)
    a[stats._sample_index(n)] = 1e6  # every sampled value is an outlier: the bracket misses
    calls = []
    monkeypatch.setattr(stats, "_gather", lambda *x: calls.append(1))
    assert stats.median(a) == np.median(a)
    assert not calls
    a[7] = np.nan
    assert np.isnan(stats.median(a)) and np.isnan(stats.median_abs_deviation(a))


def test_ties_and_infinities_keep_numpys_answer():
    n = 1 << 18
    a = np.zeros(n, np.float32)
    a[::7] = 1.0
    assert stats.median(a) == np.median(a)
    assert stats.median_abs_deviation(a) == np.median(np.abs(a - np.median(a)))
    a[::3] = np.inf
    assert stats.median(a) == np.median(a)


def test_an_image_with_a_zero_border_takes_the_fast_path(monkeypatch):
    """A 2D image whose edge columns are zero (a stride of one row would sample only them):
    the sample still brackets the middle, and the answer is numpy's."""
    calls = []
    gather = stats._gather
    monkeypatch.setattr(stats, "_gather", lambda *a: (calls.append(1), gather(*a))[1])
    img = np.random.default_rng(5).standard_normal((1024, 1024)).astype(np.float32)
    img[:, :64] = 0.0
    img[:, -64:] = 0.0
    assert stats.median(img) == np.median(img)
    assert stats.median_abs_deviation(img) == np.median(np.abs(img - np.median(img)))
    assert len(calls) == 3

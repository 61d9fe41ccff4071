"""The digits data set (art_diffpure.models.data): one fixed, stratified train/test split."""
from __future__ import annotations

import numpy as np
import pytest

from art_diffpure.models.data import digits_split_indices, load_digits_split


def test_split_shapes_and_ranges():
    for split, n in (("train", 1347), ("test", 450)):
        x, y = load_digits_split(split)
        assert x.shape == (n, 1, 8, 8) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert x.min() == 0.0 and x.max() == 1.0
        assert set(np.unique(y)) == set(range(10))


def test_split_is_fixed_and_disjoint():
    train, test = digits_split_indices()
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1797))
    train2, test2 = digits_split_indices()
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(test, test2)
    x1, y1 = load_digits_split("test")
    x2, y2 = load_digits_split("test")
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("split", ["val", "TEST", "", None])
def test_unknown_split_raises(split):
    with pytest.raises(ValueError, match="Unknown split"):
        load_digits_split(split)

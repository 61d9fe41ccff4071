"""Tests of art_diffpure.metrics.fid: Fréchet distance of feature sets."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_classifier

from art_diffpure import metrics as M


def test_feature_fid():
    rng = np.random.RandomState(0)
    a = rng.randn(200, 5)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0])
    assert M.feature_fid(a, a) == pytest.approx(0.0, abs=1e-8)
    assert M.feature_fid(a, a + shift) == pytest.approx(shift @ shift, rel=1e-6)
    model = tiny_classifier()
    features = model.net[:3]  # penultimate (flattened conv) features
    x = np.random.RandomState(1).rand(8, 1, 8, 8).astype(np.float32)
    near = M.feature_fid_from_model(features, x, x)
    far = M.feature_fid_from_model(features, x, np.clip(x + 0.3, 0, 1).astype(np.float32), batch_size=3)
    assert near == pytest.approx(0.0, abs=1e-3) and far > near


def test_bad_arguments():
    with pytest.raises(ValueError, match="Feature dimensions"):
        M.feature_fid(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        M.feature_fid(np.zeros((1, 3)), np.zeros((4, 3)))
